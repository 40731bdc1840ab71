"""The reviewer's workbench in a real browser: log in, work a queue by keyboard alone, corrections,
rejections, no page reloads, hostile outputs that never run, and queues that are not yours."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from reviewqueue.core.models import StepKind
from reviewqueue.review.models import Decision, Review
from tests.factories import QueueFactory, ReviewItemFactory, StepFactory, UserFactory, png_b64

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "amount_eur": {"type": "number", "maximum": 500}},
                "required": ["order_id", "amount_eur"],
                "additionalProperties": False,
            },
        },
    }
]


def text_step(n: int):
    return StepFactory(
        kind=StepKind.FINAL_ANSWER,
        name=f"answer-{n}",
        input=[{"role": "user", "content": f"Question number {n}?"}],
        output={"role": "assistant", "content": f"Answer number {n}."},
    )


def tool_step():
    output = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "issue_refund", "arguments": '{"order_id": "A1", "amount_eur": 90}'},
            }
        ],
    }
    return StepFactory(
        kind=StepKind.TOOL_CALL,
        name="issue_refund",
        input={"messages": [{"role": "user", "content": "Refund A1 please"}], "tools": TOOLS},
        output=output,
    )


def shows_item(page, item) -> None:
    """Wait until `item` is shown and ready for keys (htmx has settled the swap)."""
    expect(page.locator("#workbench")).to_have_attribute("data-item", str(item.pk))
    expect(page.locator("body")).not_to_have_class(re.compile(r"\bbusy\b"))


def test_log_in_and_see_my_queues(page, live_server):
    user = UserFactory(username="rita")
    QueueFactory(slug="answers", name="Support answers", members=[user])
    QueueFactory(slug="secret", name="Secret queue")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.get_by_label("Username").fill("rita")
    page.get_by_label("Password").fill("pw-for-tests-1")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your queues")).to_be_visible()
    expect(page.get_by_role("heading", name="Support answers")).to_be_visible()
    expect(page.get_by_text("Secret queue")).to_have_count(0)
    page.get_by_role("link", name="Start reviewing").click()
    expect(page).to_have_url(re.compile(r"/review/answers/$"))
    expect(page.get_by_text("Nothing left to review in Support answers")).to_be_visible()
    assert page.errors == []


def test_work_a_queue_by_keyboard_alone_without_reloading(page, login):
    user = UserFactory(username="kim")
    queue = QueueFactory(slug="answers", name="Support answers", members=[user])
    items = [ReviewItemFactory(queue=queue, step=text_step(n), priority=10 - n) for n in range(5)]
    login(user)
    page.goto("/review/answers/")
    page.evaluate("window.__sameDocument = true")
    shows_item(page, items[0])

    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_hidden()

    page.keyboard.press("a")  # approve
    shows_item(page, items[1])
    expect(page.get_by_text(f"Approved item {items[0].pk}")).to_be_visible()

    page.keyboard.press("c")  # correct a text answer
    editor = page.get_by_label("Corrected output")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("Answer number 1.")
    page.keyboard.press("Control+a")
    page.keyboard.type("A better answer.")
    expect(page.locator("#diff .d-add")).to_have_text("+ A better answer.")  # the diff before submitting
    page.keyboard.press("Control+Enter")
    shows_item(page, items[2])
    expect(page.get_by_text(f"Corrected item {items[1].pk}")).to_be_visible()

    page.keyboard.press("r")  # reject with a reason
    expect(page.get_by_label("Reason")).to_be_focused()
    page.keyboard.type("Promises a refund we do not give.")
    page.keyboard.press("Control+Enter")
    shows_item(page, items[3])

    page.keyboard.press("e")  # escalate
    shows_item(page, items[4])
    page.keyboard.press("s")  # skip: the last one goes back; nothing else is left
    expect(page.get_by_text("Nothing left to review in Support answers")).to_be_visible()
    expect(page.get_by_text("You skipped 1 item in this session.")).to_be_visible()

    assert page.evaluate("window.__sameDocument") is True  # never a full page load
    verdicts = dict(Review.objects.values_list("item_id", "verdict"))
    assert verdicts == {
        items[0].pk: "approve",
        items[1].pk: "correct",
        items[2].pk: "reject",
        items[3].pk: "escalate",
    }
    assert Decision.objects.get(step=items[1].step).output == {"role": "assistant", "content": "A better answer."}
    assert Decision.objects.get(step=items[2].step).reason == "Promises a refund we do not give."
    assert page.errors == []


def test_reject_needs_a_reason_and_buttons_work_too(page, login):
    user = UserFactory(username="lee")
    queue = QueueFactory(slug="answers", members=[user])
    first, second = ReviewItemFactory(queue=queue, step=text_step(1), priority=1), ReviewItemFactory(queue=queue)
    login(user)
    page.goto("/review/answers/")
    page.get_by_role("button", name="Reject").click()
    reason = page.get_by_label("Reason")
    expect(reason).to_be_focused()
    page.get_by_role("button", name="Reject").click()  # still no reason: not sent
    expect(reason).to_be_focused()
    assert not Review.objects.exists()
    reason.fill("Wrong order number.")
    page.get_by_role("button", name="Reject").click()
    shows_item(page, second)
    assert Review.objects.get(item=first).reason == "Wrong order number."


def test_correct_tool_call_arguments_invalid_json_refused(page, login):
    user = UserFactory(username="max")
    queue = QueueFactory(slug="tools", members=[user])
    item = ReviewItemFactory(queue=queue, step=tool_step())
    login(user)
    page.goto("/review/tools/")
    expect(page.locator(".output pre.code")).to_contain_text('"amount_eur": 90')

    page.keyboard.press("c")
    editor = page.get_by_label("Corrected output")
    expect(editor).to_be_focused()
    value = json.loads(editor.input_value())
    assert value["tool_calls"][0]["function"]["arguments"] == {"order_id": "A1", "amount_eur": 90}

    editor.fill('{"tool_calls": [ oops')
    expect(page.locator("#diff")).to_contain_text("not valid JSON")  # said while typing
    editor.press("Control+Enter")
    alert = page.locator(".flash.error")
    expect(alert).to_contain_text("not valid JSON")
    expect(alert).to_contain_text("Nothing was saved")
    expect(page.get_by_label("Corrected output")).to_have_value('{"tool_calls": [ oops')  # kept for fixing
    assert not Review.objects.exists()

    value["tool_calls"][0]["function"]["arguments"]["amount_eur"] = 900
    page.get_by_label("Corrected output").fill(json.dumps(value))
    page.get_by_label("Corrected output").press("Control+Enter")
    expect(page.locator(".flash.error")).to_contain_text("tool_calls[0].function.arguments.amount_eur")
    assert not Review.objects.exists()

    value["tool_calls"][0]["function"]["arguments"]["amount_eur"] = 45
    page.get_by_label("Corrected output").fill(json.dumps(value))
    page.get_by_label("Corrected output").press("Control+Enter")
    expect(page.get_by_text(f"Corrected item {item.pk}")).to_be_visible()
    arguments = Decision.objects.get(step=item.step).output["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"order_id": "A1", "amount_eur": 45}
    assert page.errors == []


HOSTILE = (
    "<script>window.__pwned = 'script'</script>"
    "<img src=x onerror=\"window.__pwned = 'img'\">"
    "<svg onload=\"window.__pwned = 'svg'\"><circle r=5></circle></svg>"
    "[click me](javascript:window.__pwned='link') "
    "<a href=\"javascript:window.__pwned='a'\">also me</a>"
)


def test_hostile_outputs_never_run(page, login):
    user = UserFactory(username="sam")
    queue = QueueFactory(slug="answers", members=[user], instructions=HOSTILE)
    step = StepFactory(
        name="<script>window.__pwned='name'</script>",
        input=[{"role": "user", "content": HOSTILE}, {"role": "tool", "content": HOSTILE}],
        output={"role": "assistant", "content": HOSTILE},
        metadata={"note": HOSTILE},
    )
    ReviewItemFactory(queue=queue, step=step)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    login(user)
    page.goto("/review/answers/")
    expect(page.locator(".output")).to_contain_text("click me")
    page.locator(".output").get_by_text("click me").click()
    page.locator(".output").get_by_text("also me").click()
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    assert page.locator("#workbench script, #workbench svg[onload], #workbench img[onerror]").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0
    # Shown as text, not swallowed.
    expect(page.locator(".output")).to_contain_text("also me")
    expect(page.locator(".step-title")).to_contain_text("<script>window.__pwned='name'</script>")
    page.keyboard.press("a")
    expect(page.get_by_text("Nothing left to review")).to_be_visible()
    assert page.evaluate("window.__pwned") is None


def test_a_non_member_cannot_open_another_queue(page, login):
    owner, outsider = UserFactory(username="owner"), UserFactory(username="outsider")
    queue = QueueFactory(slug="private", name="Private queue", members=[owner])
    item = ReviewItemFactory(queue=queue)
    login(outsider)
    response = page.goto("/review/private/")
    assert response.status == 404
    expect(page.get_by_text("Private queue")).to_have_count(0)
    status = page.evaluate(
        """async (url) => (await fetch(url, {method: "POST", headers: {"HX-Request": "true"}})).status""",
        f"/review/private/items/{item.pk}/verdict",
    )
    assert status in (403, 404)  # CSRF or access: either way refused
    assert not Review.objects.exists()


def test_computer_use_click_is_marked_and_can_be_moved(page, login):

    from reviewqueue.core.ingest import ingest_steps
    from reviewqueue.core.models import Agent, Step

    user = UserFactory(username="cua")
    queue = QueueFactory(slug="clicks", members=[user])
    screenshot = png_b64((800, 500), "#f6f7f9")
    ingest_steps(
        agent=Agent.objects.create(name="browser-agent"),
        payloads=[
            {
                "external_id": "click-1",
                "kind": "tool_call",
                "name": "computer",
                "output": {"action": "click", "x": 400, "y": 250},
                "attachments": [
                    {
                        "filename": "shot.png",
                        "content_type": "image/png",
                        "data": screenshot,
                    }
                ],
            }
        ],
    )
    step = Step.objects.get(external_id="click-1")
    step.review_items.all().delete()
    item = ReviewItemFactory(queue=queue, step=step)
    login(user)
    page.goto("/review/clicks/")
    screen = page.get_by_role("img", name="Screenshot with the proposed click marked")
    expect(screen).to_be_visible()
    expect(page.locator("circle.marker-ring")).to_have_attribute("cx", "400.0")
    assert page.evaluate("document.querySelector('svg[data-screen] image').getBBox().width") == 800

    page.keyboard.press("c")
    box = screen.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5)  # about (200, 250)
    value = json.loads(page.get_by_label("Corrected output").input_value())
    assert abs(value["x"] - 200) <= 3 and abs(value["y"] - 250) <= 3
    expect(page.locator("#diff .d-add").first).to_contain_text('"x"')
    page.get_by_label("Corrected output").press("Control+Enter")
    expect(page.get_by_text(f"Corrected item {item.pk}")).to_be_visible()
    corrected = Decision.objects.get(step=step).output
    assert abs(corrected["x"] - 200) <= 3 and corrected["action"] == "click"
    assert page.errors == []


def test_one_computer_use_item_after_another_breaks_no_content_security_rule(page, login):
    """A verdict's answer swaps the next computer-use item in (its screenshot and marker) with
    no page error and no Content-Security-Policy violation."""

    from reviewqueue.core.ingest import ingest_steps
    from reviewqueue.core.models import Agent, Step

    user = UserFactory(username="cua2")
    queue = QueueFactory(slug="clicks2", members=[user])
    shot = {"filename": "shot.png", "content_type": "image/png", "data": png_b64((800, 500), "#f6f7f9")}
    ingest_steps(
        agent=Agent.objects.create(name="browser-agent-2"),
        payloads=[
            {
                "external_id": f"click-{n}",
                "kind": "tool_call",
                "name": "computer",
                "output": {"action": "click", "x": 100 * n, "y": 250},
                "attachments": [shot],
            }
            for n in (1, 2)
        ],
    )
    items = []
    for n in (1, 2):
        step = Step.objects.get(external_id=f"click-{n}")
        step.review_items.all().delete()
        items.append(ReviewItemFactory(queue=queue, step=step))
    login(user)
    page.goto("/review/clicks2/")
    expect(page.locator("circle.marker-ring")).to_have_attribute("cx", "100.0")
    page.keyboard.press("a")
    expect(page.get_by_text(f"Approved item {items[0].pk}")).to_be_visible()
    expect(page.locator("circle.marker-ring")).to_have_attribute("cx", "200.0")
    page.wait_for_timeout(1000)  # the screenshot loads and htmx settles the swapped page
    assert page.errors == []
