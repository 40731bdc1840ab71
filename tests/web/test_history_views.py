"""History: the reviewer's own decisions, searchable; amending until exported."""

from __future__ import annotations

import pytest
from django.utils import timezone

from reviewqueue.core.models import AuditEvent, StepStatus
from reviewqueue.review.models import Decision, Review
from reviewqueue.review.services import claim_next_item, submit_review
from tests.factories import ReviewItemFactory, StepFactory, UserFactory

pytestmark = pytest.mark.django_db


def decide(queue, user, step, verdict="approve", **kwargs) -> Review:
    ReviewItemFactory(queue=queue, step=step)
    item = claim_next_item(queue=queue, user=user)
    return submit_review(item_id=item.pk, user=user, verdict=verdict, **kwargs)


def test_history_lists_only_my_reviews_and_searches(rita, reviewer, queue, htmx):
    mine = decide(queue, reviewer, StepFactory(name="refund-tool"), "reject", reason="wrong amount")
    decide(queue, reviewer, StepFactory(name="answer-bot"))
    other = UserFactory(username="someone")
    queue.members.add(other)
    decide(queue, other, StepFactory(name="others-step"))

    html = rita.get("/history/").content.decode()
    assert "refund-tool" in html and "answer-bot" in html and "others-step" not in html
    html = rita.get("/history/", {"q": "amount"}).content.decode()
    assert "refund-tool" in html and "answer-bot" not in html
    html = rita.get("/history/", {"verdict": "approve"}).content.decode()
    assert "answer-bot" in html and "refund-tool" not in html
    fragment = rita.get("/history/", {"q": "refund"}, **htmx).content.decode()
    assert fragment.lstrip().startswith('<section id="results"') and f"/history/{mine.pk}/" in fragment


def test_amend_from_the_history(rita, reviewer, queue):
    review = decide(queue, reviewer, StepFactory())
    page = rita.get(f"/history/{review.pk}/")
    assert page.status_code == 200 and "Save amendment" in page.content.decode()
    response = rita.post(
        f"/history/{review.pk}/",
        {"verdict": "correct", "output": "Better answer.", "comment": "oops", "label-0": "poor"},
    )
    assert response.status_code == 302 and response["Location"] == "/history/"
    decision = Decision.objects.get(step=review.item.step)
    assert decision.verdict == StepStatus.CORRECTED and decision.output["content"] == "Better answer."
    assert Review.objects.get(pk=review.pk).labels == {"tone": "poor"}
    assert AuditEvent.objects.filter(action="review.amended", actor=reviewer).exists()
    assert "was amended" in rita.get("/history/").content.decode()


def test_amend_refuses_bad_input_and_keeps_it(rita, reviewer, queue):
    review = decide(queue, reviewer, StepFactory())
    response = rita.post(f"/history/{review.pk}/", {"verdict": "reject", "reason": ""})
    assert response.status_code == 422 and "required for reject" in response.content.decode()
    assert Review.objects.get(pk=review.pk).verdict == "approve"


def test_exported_decisions_are_locked(rita, reviewer, queue):
    review = decide(queue, reviewer, StepFactory())
    Decision.objects.filter(step=review.item.step).update(exported_at=timezone.now())
    assert "locked" in rita.get("/history/").content.decode()
    page = rita.get(f"/history/{review.pk}/").content.decode()
    assert "exported in a dataset version" in page and "Save amendment" not in page
    response = rita.post(f"/history/{review.pk}/", {"verdict": "reject", "reason": "late"})
    assert response.status_code == 409
    assert Review.objects.get(pk=review.pk).verdict == "approve"


def test_someone_elses_review_is_404(client_for, reviewer, queue):
    review = decide(queue, reviewer, StepFactory())
    other = client_for(UserFactory(username="nosy"))
    assert other.get(f"/history/{review.pk}/").status_code == 404
    assert other.post(f"/history/{review.pk}/", {"verdict": "reject", "reason": "x"}).status_code == 404


def test_history_queries_do_not_grow_with_rows(rita, reviewer, queue):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    decide(queue, reviewer, StepFactory(), "correct", output={"role": "assistant", "content": "fixed"})
    with CaptureQueriesContext(connection) as few:
        assert rita.get("/history/").status_code == 200
    for _ in range(5):
        decide(queue, reviewer, StepFactory(), "reject", reason="no")
    with CaptureQueriesContext(connection) as many:
        html = rita.get("/history/").content.decode()
    assert html.count("/history/") >= 6
    assert len(many) == len(few)
