"""The ingest service: validation, routing, idempotency, all-or-nothing."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from reviewqueue.core.ingest import IngestValidationError, ingest_steps
from reviewqueue.core.models import Attachment, AuditEvent, Step, Trace
from reviewqueue.review.models import ReviewItem
from tests.factories import AgentFactory, QueueFactory, RoutingRuleFactory, png_b64

pytestmark = pytest.mark.django_db


def step(external_id: str, **fields: object) -> dict:
    return {"external_id": external_id, "kind": "llm", "name": "gpt-4o", "input": [], "output": "hi", **fields}


@pytest.fixture
def agent():
    return AgentFactory(name="support-bot")


@pytest.fixture
def low_confidence_rule():
    queue = QueueFactory(slug="low-conf", sla_seconds=3600)
    return RoutingRuleFactory(
        name="low confidence",
        conditions=[{"field": "confidence", "op": "lt", "value": 0.5}],
        queue=queue,
        priority=7,
    )


def test_unrouted_steps_are_auto_approved(agent) -> None:
    answers, created = ingest_steps(agent=agent, payloads=[step("a", confidence=0.9)])
    assert created is True
    stored = Step.objects.get(agent=agent, external_id="a")
    assert answers == [
        {"id": stored.pk, "external_id": "a", "status": "auto_approved", "queue": None, "rule": None, "created": True}
    ]
    assert stored.status == "auto_approved" and stored.kind == "llm" and stored.output == "hi"
    assert not ReviewItem.objects.exists()


def test_matching_rule_routes_to_its_queue(agent, low_confidence_rule) -> None:
    answers, _ = ingest_steps(agent=agent, payloads=[step("low", confidence=0.2), step("high", confidence=0.95)])
    low, high = answers
    assert low["status"] == "pending_review" and low["queue"] == "low-conf" and low["rule"] == "low confidence"
    assert high["status"] == "auto_approved" and high["queue"] is None
    stored = Step.objects.get(pk=low["id"])
    assert stored.rule_id == low_confidence_rule.pk
    assert stored.rule_name == "low confidence" and stored.rule_version == low_confidence_rule.version
    assert stored.route_reason["matched"] == {"confidence": 0.2}
    assert stored.spot_check is False
    item = ReviewItem.objects.get(step=stored)
    assert item.queue.slug == "low-conf" and item.priority == 7 and item.status == "pending"
    assert abs((item.due_at - stored.created_at).total_seconds() - 3600) < 1


def test_sampled_rule_marks_spot_checks(agent) -> None:
    RoutingRuleFactory(
        name="spot check",
        conditions=[{"field": "confidence", "op": "gte", "value": 0.9}],
        queue=QueueFactory(slug="spot"),
        sample_rate=0.5,
    )
    answers, _ = ingest_steps(agent=agent, payloads=[step(f"s{i}", confidence=0.95) for i in range(60)])
    routed = [a for a in answers if a["status"] == "pending_review"]
    assert 10 < len(routed) < 50  # a deterministic fraction, not all and not none
    assert all(Step.objects.get(pk=a["id"]).spot_check for a in routed)
    assert ReviewItem.objects.count() == len(routed)


def test_fields_traces_and_parents_are_stored(agent) -> None:
    ingest_steps(agent=agent, payloads=[step("root", trace_id="t1")])
    ingest_steps(
        agent=agent,
        payloads=[
            step("child", trace_id="t1", parent_id="root", metadata={"env": "prod"}, blocking=True),
            step("grandchild", trace_id="t1", parent_id="child", kind="tool_call"),
            step("orphan", trace_id="t2", parent_id="never-sent"),
            {"external_id": "bare"},
        ],
    )
    steps = {s.external_id: s for s in Step.objects.select_related("trace", "parent")}
    assert Trace.objects.filter(agent=agent).count() == 2
    assert steps["child"].trace == steps["root"].trace and steps["child"].trace.external_id == "t1"
    assert steps["child"].parent == steps["root"]
    assert steps["grandchild"].parent == steps["child"]  # parent sent in the same batch
    assert steps["orphan"].parent is None and steps["orphan"].parent_external_id == "never-sent"
    assert steps["child"].metadata == {"env": "prod"} and steps["child"].blocking is True
    bare = steps["bare"]
    assert (bare.kind, bare.name, bare.trace, bare.metadata, bare.confidence) == ("other", "", None, {}, None)


def test_replay_answers_the_first_result(agent, low_confidence_rule) -> None:
    first, created = ingest_steps(agent=agent, payloads=[step("x", confidence=0.1)])
    assert created
    again, created_again = ingest_steps(agent=agent, payloads=[step("x", confidence=0.99, output="changed")])
    assert created_again is False
    assert again == [{**first[0], "created": False}]
    assert Step.objects.filter(external_id="x").count() == 1
    assert Step.objects.get(external_id="x").output == "hi"
    assert ReviewItem.objects.count() == 1


def test_same_external_id_for_another_agent_is_another_step(agent) -> None:
    ingest_steps(agent=agent, payloads=[step("x")])
    _, created = ingest_steps(agent=AgentFactory(name="other"), payloads=[step("x")])
    assert created and Step.objects.filter(external_id="x").count() == 2


def test_duplicate_inside_a_batch_is_a_replay_of_the_first(agent) -> None:
    answers, created = ingest_steps(agent=agent, payloads=[step("d"), step("e"), step("d", output="second")])
    assert created
    assert [a["created"] for a in answers] == [True, True, False]
    assert answers[0]["id"] == answers[2]["id"]
    assert Step.objects.get(external_id="d").output == "hi"


def test_mixed_batch_creates_only_the_new_steps(agent) -> None:
    ingest_steps(agent=agent, payloads=[step("old")])
    answers, created = ingest_steps(agent=agent, payloads=[step("old"), step("new")])
    assert created and [a["created"] for a in answers] == [False, True]
    assert Step.objects.count() == 2


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"kind": "llm"}, "external_id"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": 12}, "external_id"),
        ({"external_id": "x" * 201}, "external_id"),
        ({"external_id": "a\x00b"}, "external_id"),
        ({"external_id": "b", "confidence": 1.5}, "confidence"),
        ({"external_id": "b", "confidence": -0.1}, "confidence"),
        ({"external_id": "b", "confidence": math.nan}, "confidence"),
        ({"external_id": "b", "confidence": math.inf}, "confidence"),
        ({"external_id": "b", "confidence": "0.5"}, "confidence"),
        ({"external_id": "b", "confidence": True}, "confidence"),
        ({"external_id": "b", "confidence": 10**400}, "confidence"),
        ({"external_id": "b", "kind": "thought"}, "kind"),
        ({"external_id": "b", "name": 5}, "name"),
        ({"external_id": "b", "metadata": ["a"]}, "metadata"),
        ({"external_id": "b", "blocking": "yes"}, "blocking"),
        ({"external_id": "b", "trace_id": 7}, "trace_id"),
        ({"external_id": "b", "parent_id": {"id": 1}}, "parent_id"),
        ({"external_id": "b", "output": {"x": math.nan}}, "output"),
        ({"external_id": "b", "input": "nul \x00 byte"}, "input"),
        ({"external_id": "b", "metadata": {"k": "\ud800"}}, "metadata"),
        ({"external_id": "b", "attachments": {"data": "x"}}, "attachments"),
        ({"external_id": "b", "attachments": [{"data": "bm90IGFuIGltYWdl"}]}, "attachments"),
        ({"external_id": "b", "colour": "red"}, "colour"),
    ],
)
def test_bad_entry_fails_the_whole_batch(agent, bad: dict, field: str) -> None:
    with pytest.raises(IngestValidationError) as caught:
        ingest_steps(agent=agent, payloads=[step("good-1"), bad, step("good-2")])
    assert list(caught.value.entry_errors) == [1]
    assert field in caught.value.entry_errors[1]
    assert f"steps[1].{field}:" in str(caught.value)
    assert not Step.objects.exists() and not Trace.objects.exists() and not AuditEvent.objects.exists()


def test_errors_name_every_failing_entry(agent) -> None:
    with pytest.raises(IngestValidationError) as caught:
        ingest_steps(agent=agent, payloads=[step("a"), {"confidence": 2}, step("c"), "not an object"])
    assert caught.value.batch_errors() == {
        "steps": {
            "1": {
                "external_id": ["required, a non-empty string"],
                "confidence": ["must be a number between 0 and 1, or null"],
            },
            "3": {"non_field_errors": ["each step must be a JSON object"]},
        }
    }
    assert "2 of 4 entries invalid: 1, 3" in caught.value.batch_detail()


def test_attachments_are_stored_with_files(agent) -> None:
    answers, _ = ingest_steps(
        agent=agent,
        payloads=[
            step("img", attachments=[{"filename": "screen.png", "content_type": "image/png", "data": png_b64()}])
        ],
    )
    att = Attachment.objects.get(step_id=answers[0]["id"])
    assert (att.filename, att.content_type, att.width, att.height) == ("screen.png", "image/png", 20, 10)
    with att.image.open("rb") as f:
        assert Image.open(f).size == (20, 10)
    with att.thumbnail.open("rb") as f:
        assert Image.open(f).format == "PNG"
    assert att.sha256 in att.image.name and att.size_bytes == att.image.size


def test_one_audit_event_per_request(agent) -> None:
    answers, _ = ingest_steps(agent=agent, payloads=[step(f"s{i}") for i in range(5)])
    event = AuditEvent.objects.get()
    assert event.action == "steps.ingested" and event.actor_agent == agent
    assert event.after["created"] == 5 and event.after["ids"] == [a["id"] for a in answers]
    ingest_steps(agent=agent, payloads=[step("s0")])  # a pure replay changes nothing
    assert AuditEvent.objects.count() == 1


# --- the insert-first path: a replay is found by the unique constraint, then looked up ---------


def test_a_replayed_routed_step_with_an_attachment_adds_nothing(agent, low_confidence_rule) -> None:
    image = [{"filename": "a.png", "content_type": "image/png", "data": png_b64()}]
    payload = step("r", trace_id="t", confidence=0.1, attachments=image)
    first, _ = ingest_steps(agent=agent, payloads=[payload])
    counts = [m.objects.count() for m in (Step, Trace, ReviewItem, Attachment, AuditEvent)]
    again, created = ingest_steps(agent=agent, payloads=[payload])
    assert created is False and again == [{**first[0], "created": False}]
    assert [m.objects.count() for m in (Step, Trace, ReviewItem, Attachment, AuditEvent)] == counts


def test_a_batch_mixing_replays_and_new_steps_links_parents_to_the_replayed_ones(agent) -> None:
    (old,), _ = ingest_steps(agent=agent, payloads=[step("old", trace_id="t")])
    answers, created = ingest_steps(
        agent=agent,
        payloads=[
            step("child", trace_id="t", parent_id="old"),
            step("old", trace_id="t"),
            step("grandchild", trace_id="t", parent_id="child"),
        ],
    )
    assert created and [a["created"] for a in answers] == [True, False, True]
    assert answers[1] == {**old, "created": False}
    steps = {s.external_id: s for s in Step.objects.all()}
    assert steps["child"].parent_id == old["id"] and steps["grandchild"].parent == steps["child"]
    assert Trace.objects.count() == 1
    event = AuditEvent.objects.latest("id")
    assert event.after["ids"] == [answers[0]["id"], answers[2]["id"]] and event.after["created"] == 2


def test_a_single_step_links_its_stored_parent(agent) -> None:
    (root,), _ = ingest_steps(agent=agent, payloads=[step("root", trace_id="t")])
    (child,), _ = ingest_steps(agent=agent, payloads=[step("child", trace_id="t", parent_id="root")])
    (itself,), _ = ingest_steps(agent=agent, payloads=[step("self", parent_id="self")])
    assert Step.objects.get(pk=child["id"]).parent_id == root["id"]
    assert Step.objects.get(pk=itself["id"]).parent_id is None
    # another agent's step of that external_id is never a parent
    (stranger,), _ = ingest_steps(agent=AgentFactory(name="other"), payloads=[step("kid", parent_id="root")])
    assert Step.objects.get(pk=stranger["id"]).parent_id is None


def test_a_new_step_takes_few_queries(agent, low_confidence_rule, django_assert_max_num_queries) -> None:
    """Rules (a signature query once cached), the trace, the step with its parent looked up in
    the INSERT, the review item, the audit event, and the savepoint around them (the test's
    transaction): no replay lookup and no sequence query for a step that is new."""
    ingest_steps(agent=agent, payloads=[step("root", trace_id="t")])
    with django_assert_max_num_queries(7):
        (answer,), _ = ingest_steps(agent=agent, payloads=[step("c", trace_id="t", parent_id="root", confidence=0.1)])
    assert answer["status"] == "pending_review" and Step.objects.get(pk=answer["id"]).parent.external_id == "root"


def test_a_rule_edited_between_requests_decides_the_next_step(agent, low_confidence_rule) -> None:
    from reviewqueue.routing.models import RoutingRule
    from reviewqueue.routing.services import update_rule

    (first,), _ = ingest_steps(agent=agent, payloads=[step("a", confidence=0.4)])
    assert first["status"] == "pending_review"
    rule = update_rule(
        rule=low_confidence_rule, data={"conditions": [{"field": "confidence", "op": "lt", "value": 0.3}]}, actor=None
    )
    (second,), _ = ingest_steps(agent=agent, payloads=[step("b", confidence=0.4)])
    assert second["status"] == "auto_approved"
    (third,), _ = ingest_steps(agent=agent, payloads=[step("c", confidence=0.2)])
    assert Step.objects.get(pk=third["id"]).rule_version == rule.version == 2
    RoutingRule.objects.filter(pk=rule.pk).update(enabled=False)  # no signals, no version bump
    (fourth,), _ = ingest_steps(agent=agent, payloads=[step("d", confidence=0.2)])
    assert fourth["status"] == "auto_approved"
