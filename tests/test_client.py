"""The agent-side client (reviewqueue/client.py) against a live server: submit, batches,
wait_for_decision, and the @client.review decorator end to end with a reviewer deciding."""

from __future__ import annotations

import threading
import time

import pytest

from reviewqueue.client import Client, Decision, DecisionTimeout, Rejected, arguments_from_output
from reviewqueue.core.models import ApiKey, Step
from reviewqueue.review.models import Queue, ReviewItem
from reviewqueue.review.services import claim_next_item, submit_review
from tests.factories import AgentFactory, QueueFactory, RoutingRuleFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(live_server):
    agent = AgentFactory(name="client-agent")
    reviewer = UserFactory(username="rita")
    queue = QueueFactory(slug="tools", members=[reviewer])
    RoutingRuleFactory(
        name="requested", conditions=[{"field": "metadata.review_requested", "op": "eq", "value": True}], queue=queue
    )
    with Client(live_server.url, ApiKey.issue(agent)[1], backoff=0.01) as c:
        yield c


def decide_when_queued(verdict: str, **fields) -> threading.Thread:
    """A reviewer in another thread: waits for the item, then decides it."""

    def run() -> None:
        user = UserFactory(username="rita")
        queue = Queue.objects.get(slug="tools")
        for _ in range(200):
            item = claim_next_item(queue=queue, user=user)
            if item is not None:
                submit_review(item_id=item.pk, user=user, verdict=verdict, **fields)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_submit_is_idempotent_and_batches(client) -> None:
    first = client.submit({"external_id": "s-1", "kind": "llm", "output": "hi", "metadata": {"review_requested": True}})
    assert first.needs_review and first.queue == "tools" and first.created
    again = client.submit(external_id="s-1", kind="llm", output="hi")
    assert again.id == first.id and not again.created
    many = client.submit_many([{"kind": "llm", "output": str(n)} for n in range(3)])
    assert [m.status for m in many] == ["auto_approved"] * 3 and len({m.external_id for m in many}) == 3
    assert client.decision(many[0].id).status == "auto_approved"


def test_wait_for_decision_returns_pending_at_the_timeout(client) -> None:
    answer = client.submit(kind="llm", output="x", metadata={"review_requested": True})
    decision = client.wait_for_decision(answer.id, timeout=1)
    assert decision.pending and decision.queue == "tools"


def test_decorator_runs_the_tool_with_corrected_arguments(client) -> None:
    calls = []

    @client.review(queue_when=lambda args: args["amount_eur"] > 100, timeout=30)
    def refund(order_id: str, amount_eur: float) -> str:
        calls.append((order_id, amount_eur))
        return f"refunded {amount_eur}"

    assert refund("A1", 20) == "refunded 20"  # not requested, auto-approved: runs at once
    reviewer = decide_when_queued(
        "correct",
        output={
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c",
                    "type": "function",
                    "function": {"name": "refund", "arguments": '{"order_id": "A2", "amount_eur": 100}'},
                }
            ],
        },
    )
    assert refund("A2", amount_eur=250) == "refunded 100"
    reviewer.join()
    assert calls == [("A1", 20), ("A2", 100)]
    blocked = Step.objects.get(status="corrected")
    assert blocked.blocking and blocked.kind == "tool_call" and blocked.name == "refund"
    assert ReviewItem.objects.get(step=blocked).blocking


def test_decorator_raises_on_timeout(client) -> None:
    @client.review(timeout=1)
    def delete_account(user_id: str) -> None:
        raise AssertionError("must not run")

    with pytest.raises(DecisionTimeout):
        delete_account("u1")


def test_decorator_raises_on_rejection(client) -> None:
    @client.review(timeout=30)
    def wipe(disk: str) -> None:
        raise AssertionError("must not run")

    reviewer = decide_when_queued("reject", reason="never wipe prod")
    with pytest.raises(Rejected, match="never wipe prod") as info:
        wipe("prod")
    reviewer.join()
    assert info.value.decision.status == "rejected"


def test_retries_connection_errors_then_raises() -> None:
    import httpx

    client = Client("http://127.0.0.1:9", "rq_x", retries=2, backoff=0.001)
    with pytest.raises(httpx.ConnectError):
        client.submit(kind="llm")


def test_arguments_from_output_forms() -> None:
    assert arguments_from_output({"tool_calls": [{"function": {"arguments": '{"a": 1}'}}]}) == {"a": 1}
    assert arguments_from_output({"tool_calls": [{"function": {"arguments": {"a": 2}}}]}) == {"a": 2}
    assert arguments_from_output({"arguments": {"a": 3}}) == {"a": 3}
    assert arguments_from_output({"a": 4}) == {"a": 4}
    assert arguments_from_output({"role": "assistant", "content": "no call"}) is None
    assert Decision.from_json({"status": "corrected"}).approved
