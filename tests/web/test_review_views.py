"""The review screen: full page vs htmx fragment, verdicts, refusals, leases, access, escaping."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reviewqueue.core.models import AuditEvent, StepKind, StepStatus
from reviewqueue.review.models import Decision, ItemStatus, Review, ReviewItem
from tests.factories import QueueFactory, ReviewItemFactory, StepFactory, TraceFactory

pytestmark = pytest.mark.django_db


def page_url(queue) -> str:
    return f"/review/{queue.slug}/"


def verdict_url(queue, item) -> str:
    return f"/review/{queue.slug}/items/{item.pk}/verdict"


def claimed(queue, user) -> ReviewItem:
    return ReviewItem.objects.get(queue=queue, claimed_by=user, status=ItemStatus.CLAIMED)


def test_login_required(client, queue):
    response = client.get(page_url(queue))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_full_page_for_a_plain_request_fragment_for_htmx(rita, queue, htmx):
    ReviewItemFactory(queue=queue)
    full = rita.get(page_url(queue))
    assert full.status_code == 200
    html = full.content.decode()
    assert html.lstrip().startswith("<!doctype html>") and 'id="workbench"' in html
    assert "htmx-2.min.js" in html and "reviewqueue/app.js" in html
    fragment = rita.get(page_url(queue), **htmx)
    body = fragment.content.decode()
    assert body.lstrip().startswith('<div id="workbench"')
    assert "<html" not in body and "<head" not in body


def test_page_shows_the_item(rita, queue):
    trace = TraceFactory()
    StepFactory(agent=trace.agent, trace=trace, kind=StepKind.LLM, name="earlier-step")
    step = StepFactory(
        agent=trace.agent,
        trace=trace,
        kind=StepKind.FINAL_ANSWER,
        name="gpt-4o",
        confidence=0.42,
        blocking=True,
        rule_name="low-confidence",
        rule_version=3,
        route_reason={"rule": "low-confidence", "version": 3, "matched": {"confidence": 0.42}},
        input=[{"role": "user", "content": "Where is **A1**?"}],
        output={"role": "assistant", "content": "It shipped."},
        metadata={"env": "prod"},
    )
    ReviewItemFactory(queue=queue, step=step)
    html = rita.get(page_url(queue)).content.decode()
    for text in ("gpt-4o", "0.42", "low-confidence", trace.agent.name, "Agent waiting", "earlier-step"):
        assert text in html
    assert "low-confidence v3" in html and "(confidence = 0.42)" in html
    assert "<strong>A1</strong>" in html  # markdown rendered
    assert "<strong>answer</strong>" in html and "<script>alert(1)" not in html  # instructions sanitised
    assert 'aria-label="Approve"' in html and 'aria-label="Skip"' in html
    assert 'id="corrected-output"' in html and ">It shipped.</textarea>" in html
    assert 'name="label-0"' in html and 'value="good"' in html  # the rubric
    assert "Lease" in html and 'hx-trigger="every' in html  # the heartbeat


def test_hostile_output_is_escaped(rita, queue):
    payload = '<script>window.pwned=1</script><img src=x onerror="window.pwned=1">'
    step = StepFactory(
        input=[{"role": "user", "content": payload}],
        output={"role": "assistant", "content": "[x](javascript:alert(1)) " + payload},
        name="<b>name</b>",
        metadata={"k": payload},
    )
    ReviewItemFactory(queue=queue, step=step)
    response = rita.get(page_url(queue))
    html = response.content.decode()
    assert "<script>window.pwned" not in html and "<img src=x" not in html and 'href="javascript:' not in html
    assert "&lt;b&gt;name&lt;/b&gt;" in html
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "unsafe-inline" not in response["Content-Security-Policy"]


def test_empty_queue_says_so(rita, queue):
    html = rita.get(page_url(queue)).content.decode()
    assert "Nothing left to review in Support answers" in html


def test_non_member_gets_404_for_the_queue_and_its_items(client_for, outsider, queue):
    item = ReviewItemFactory(queue=queue)
    other = client_for(outsider)
    assert other.get(page_url(queue)).status_code == 404
    assert other.post(verdict_url(queue, item), {"verdict": "approve"}).status_code == 404
    assert other.post(f"/review/{queue.slug}/items/{item.pk}/heartbeat").status_code == 404
    item.refresh_from_db()
    assert item.status == ItemStatus.PENDING


def test_item_of_another_queue_through_my_queue_url_is_404(rita, reviewer, queue):
    mine = ReviewItemFactory(queue=queue)
    foreign = ReviewItemFactory(queue=QueueFactory(slug="secret"))
    rita.get(page_url(queue))
    assert claimed(queue, reviewer) == mine
    assert rita.post(verdict_url(queue, foreign), {"verdict": "approve"}).status_code == 404


def test_approve_answers_with_the_next_item_fragment(rita, reviewer, queue, htmx):
    first = ReviewItemFactory(queue=queue, priority=1)
    second = ReviewItemFactory(queue=queue)
    rita.get(page_url(queue))
    response = rita.post(
        verdict_url(queue, first),
        {"verdict": "approve", "comment": "fine", "label-0": "good", "label-1": "4", "shown_at": "1"},
        **htmx,
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="workbench"') and "<html" not in body
    assert f'data-item="{second.pk}"' in body and f"Approved item {first.pk}" in body
    review = Review.objects.get(item=first)
    assert (review.verdict, review.comment, review.labels) == ("approve", "fine", {"tone": "good", "score": 4})
    assert claimed(queue, reviewer) == second
    assert Decision.objects.get(step=first.step).verdict == StepStatus.APPROVED


def test_correct_text_answer(rita, queue, htmx):
    item = ReviewItemFactory(queue=queue)
    rita.get(page_url(queue))
    response = rita.post(verdict_url(queue, item), {"verdict": "correct", "output": "It ships today."}, **htmx)
    assert response.status_code == 200
    decision = Decision.objects.get(step=item.step)
    assert decision.output == {"role": "assistant", "content": "It ships today."}
    assert "d-add" in response.content.decode()  # the diff of the correction, after submitting


def tool_step(**kwargs):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "refund",
                "parameters": {
                    "type": "object",
                    "properties": {"amount": {"type": "number", "maximum": 100}},
                    "required": ["amount"],
                },
            },
        }
    ]
    output = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "refund", "arguments": '{"amount": 50}'}}],
    }
    return StepFactory(kind=StepKind.TOOL_CALL, name="refund", input={"messages": [], "tools": tools}, output=output)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"tool_calls": [', "not valid JSON"),
        (
            '{"role": "assistant", "tool_calls": [{"type": "function", "function": '
            '{"name": "refund", "arguments": {"amount": 1000}}}]}',
            "tool_calls[0].function.arguments.amount: 1000 is greater than the maximum of 100",
        ),
    ],
)
def test_invalid_correction_is_refused_inline_and_nothing_is_saved(rita, reviewer, queue, htmx, text, message):
    item = ReviewItemFactory(queue=queue, step=tool_step())
    rita.get(page_url(queue))
    response = rita.post(verdict_url(queue, item), {"verdict": "correct", "output": text}, **htmx)
    assert response.status_code == 422
    body = response.content.decode()
    assert message in body and "Nothing was saved" in body
    assert f'data-item="{item.pk}"' in body  # the same item, with the editor open and the text kept
    assert 'id="correct-panel" data-panel="correct" hidden' not in body
    assert json.dumps(text)[1:-1].replace('\\"', "&quot;")[:10] in body
    assert not Review.objects.exists()
    assert claimed(queue, reviewer) == item


def test_valid_tool_call_correction(rita, queue, htmx):
    item = ReviewItemFactory(queue=queue, step=tool_step())
    rita.get(page_url(queue))
    text = json.dumps(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": {"amount": 20}}}
            ],
        }
    )
    assert rita.post(verdict_url(queue, item), {"verdict": "correct", "output": text}, **htmx).status_code == 200
    arguments = Decision.objects.get(step=item.step).output["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"amount": 20}


def test_reject_needs_a_reason(rita, queue, htmx):
    item = ReviewItemFactory(queue=queue)
    rita.get(page_url(queue))
    response = rita.post(verdict_url(queue, item), {"verdict": "reject", "reason": " "}, **htmx)
    assert response.status_code == 422 and "reason: required for reject" in response.content.decode()
    assert not Review.objects.exists()
    response = rita.post(verdict_url(queue, item), {"verdict": "reject", "reason": "Made-up policy"}, **htmx)
    assert response.status_code == 200
    assert Decision.objects.get(step=item.step).reason == "Made-up policy"


def test_bad_rubric_answer_is_refused_by_name(rita, queue, htmx):
    item = ReviewItemFactory(queue=queue)
    rita.get(page_url(queue))
    response = rita.post(verdict_url(queue, item), {"verdict": "approve", "label-1": "9"}, **htmx)
    assert response.status_code == 422 and "must be a number from 1 to 5" in response.content.decode()


def test_verdict_on_a_lost_lease_is_refused_and_the_next_item_offered(rita, reviewer, queue, htmx):
    first = ReviewItemFactory(queue=queue, priority=1)
    second = ReviewItemFactory(queue=queue)
    rita.get(page_url(queue))
    ReviewItem.objects.filter(pk=first.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    response = rita.post(verdict_url(queue, first), {"verdict": "approve"}, **htmx)
    assert response.status_code == 409
    body = response.content.decode()
    assert "expired" in body and "Your verdict was not saved." in body
    assert not Review.objects.exists()
    # The next item is offered: pending items come before expired leases.
    assert f'data-item="{second.pk}"' in body
    second.refresh_from_db()
    assert second.claimed_by == reviewer


def test_heartbeat_extends_the_lease_and_reports_a_lost_one(rita, reviewer, queue, htmx):
    item = ReviewItemFactory(queue=queue)
    rita.get(page_url(queue))
    ReviewItem.objects.filter(pk=item.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=5))
    url = f"/review/{queue.slug}/items/{item.pk}/heartbeat"
    response = rita.post(url, **htmx)
    assert response.status_code == 200 and 'id="lease"' in response.content.decode()
    item.refresh_from_db()
    assert item.lease_expires_at > timezone.now() + timedelta(seconds=200)
    ReviewItem.objects.filter(pk=item.pk).update(status=ItemStatus.PENDING, claimed_by=None, lease_expires_at=None)
    body = rita.post(url, **htmx).content.decode()
    assert "Lease lost." in body and "hx-trigger" not in body  # polling stops


def test_skip_gives_the_item_back_and_does_not_offer_it_again(rita, reviewer, queue, htmx):
    first = ReviewItemFactory(queue=queue, priority=1)
    second = ReviewItemFactory(queue=queue)
    rita.get(page_url(queue))
    response = rita.post(verdict_url(queue, first), {"verdict": "skip"}, **htmx)
    assert f'data-item="{second.pk}"' in response.content.decode()
    first.refresh_from_db()
    assert first.status == ItemStatus.PENDING
    body = rita.post(verdict_url(queue, second), {"verdict": "skip"}, **htmx).content.decode()
    assert "Nothing left to review" in body and "You skipped 2 items" in body
    body = rita.post(f"/review/{queue.slug}/skipped/reset", **htmx).content.decode()
    assert f'data-item="{first.pk}"' in body
    assert AuditEvent.objects.filter(action="item.released").count() == 2


def test_unknown_verdict_is_400(rita, queue, htmx):
    item = ReviewItemFactory(queue=queue)
    rita.get(page_url(queue))
    assert rita.post(verdict_url(queue, item), {"verdict": "delete"}, **htmx).status_code == 400


def test_csrf_is_enforced_on_htmx_posts(reviewer, queue):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    item = ReviewItemFactory(queue=queue)
    client.get(page_url(queue))
    assert client.post(verdict_url(queue, item), {"verdict": "approve"}, HTTP_HX_REQUEST="true").status_code == 403
    token = client.cookies["csrftoken"].value
    response = client.post(
        verdict_url(queue, item), {"verdict": "approve"}, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 200


def test_diff_endpoint(rita, queue, htmx):
    item = ReviewItemFactory(queue=queue)
    rita.get(page_url(queue))
    url = f"/review/{queue.slug}/items/{item.pk}/diff"
    body = rita.post(url, {"output": "It shipped today."}, **htmx).content.decode()
    assert 'class="d-del"' in body and "It shipped today." in body
    body = rita.post(
        f"/review/{queue.slug}/items/{ReviewItemFactory(queue=queue, step=tool_step()).pk}/diff",
        {"output": "{nope"},
        **htmx,
    ).content.decode()
    assert "not valid JSON" in body


def _page_queries(client, queue, trace_length: int) -> int:
    trace = TraceFactory()
    steps = [StepFactory(agent=trace.agent, trace=trace) for _ in range(trace_length)]
    ReviewItemFactory(queue=queue, step=steps[-1])
    with CaptureQueriesContext(connection) as queries:
        response = client.get(page_url(queue))
    assert response.status_code == 200
    assert f"{trace_length - 1} steps" in response.content.decode()
    return len(queries)


def test_page_queries_do_not_grow_with_the_trace(client_for, reviewer):
    # Two separate queues and users so that each measurement claims afresh.
    short = _page_queries(client_for(reviewer), QueueFactory(slug="short", members=[reviewer]), 5)
    other = type(reviewer).objects.create_user("second")
    long = _page_queries(client_for(other), QueueFactory(slug="long", members=[other]), 50)
    assert long == short
    assert long <= 20
