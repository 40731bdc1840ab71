"""Routing services: first match wins, sampling falls through, rules are versioned and audited."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from reviewqueue.core.models import AuditEvent
from reviewqueue.routing.conditions import sample_hit
from reviewqueue.routing.models import RoutingRule, RoutingRuleVersion
from reviewqueue.routing.services import create_rule, delete_rule, load_rules, route_step, update_rule
from tests.factories import QueueFactory, RoutingRuleFactory, UserFactory

pytestmark = pytest.mark.django_db


def facts(**overrides: object) -> dict:
    return {"confidence": 0.5, "kind": "final_answer", "name": "gpt-4o", "agent": "bot", "metadata": {}, **overrides}


LOW_CONFIDENCE = [{"field": "confidence", "op": "lt", "value": 0.7}]


def test_the_first_enabled_matching_rule_by_position_decides() -> None:
    queue, other = QueueFactory(slug="answers"), QueueFactory(slug="other")
    RoutingRuleFactory(name="disabled", position=1, enabled=False, queue=other)
    RoutingRuleFactory(name="late", position=30, queue=other, conditions=LOW_CONFIDENCE)
    RoutingRuleFactory(name="early", position=20, queue=queue, priority=7, conditions=LOW_CONFIDENCE)
    RoutingRuleFactory(
        name="tools", position=10, queue=other, conditions=[{"field": "kind", "op": "eq", "value": "tool_call"}]
    )

    rules = load_rules()
    assert [r.name for r in rules] == ["tools", "early", "late"]
    decision = route_step(facts(confidence=0.2), rules=rules, sample_key="1:a")
    assert (decision.action, decision.queue, decision.rule.name, decision.priority) == ("route", queue, "early", 7)
    assert decision.rule_version == 1
    assert decision.reason == {"rule": "early", "version": 1, "matched": {"confidence": 0.2}, "sampled": 1.0}


def test_no_match_auto_approves_without_a_rule() -> None:
    RoutingRuleFactory(conditions=LOW_CONFIDENCE)
    decision = route_step(facts(confidence=0.9), rules=load_rules(), sample_key="1:a")
    assert (decision.action, decision.queue, decision.rule, decision.rule_version) == ("auto_approve", None, None, None)


def test_an_auto_approve_rule_stops_later_rules() -> None:
    RoutingRuleFactory(
        name="safe",
        position=1,
        action="auto_approve",
        queue=None,
        conditions=[{"field": "name", "op": "glob", "value": "get_*"}],
    )
    RoutingRuleFactory(name="all", position=2)
    decision = route_step(facts(name="get_order"), rules=load_rules(), sample_key="1:a")
    assert (decision.action, decision.queue, decision.rule.name) == ("auto_approve", None, "safe")


def test_sampled_rules_apply_to_their_fraction_and_the_rest_fall_through() -> None:
    spot, fallback = QueueFactory(slug="spot"), QueueFactory(slug="fallback")
    RoutingRuleFactory(name="spot-check", position=1, queue=spot, sample_rate=0.25)
    RoutingRuleFactory(name="everything-else", position=2, queue=fallback)
    rules = load_rules()
    keys = [f"7:step-{i}" for i in range(400)]
    decided = {key: route_step(facts(), rules=rules, sample_key=key).rule.name for key in keys}
    for key, name in decided.items():
        assert name == ("spot-check" if sample_hit(0.25, key) else "everything-else")
    assert 60 < sum(name == "spot-check" for name in decided.values()) < 140
    # Deterministic: the same step always gets the same answer.
    assert decided == {key: route_step(facts(), rules=rules, sample_key=key).rule.name for key in keys}


def test_create_rule_writes_version_one_and_an_audit_event() -> None:
    admin = UserFactory(username="admin", is_staff=True)
    QueueFactory(slug="answers")
    rule = create_rule(
        data={"name": "low", "position": 5, "conditions": LOW_CONFIDENCE, "queue": "answers", "sample_rate": 1},
        actor=admin,
    )
    assert rule.version == 1 and rule.queue.slug == "answers" and rule.sample_rate == 1.0
    version = RoutingRuleVersion.objects.get(rule=rule)
    assert (version.version, version.changed_by, version.snapshot["queue"]) == (1, admin, "answers")
    event = AuditEvent.objects.get(action="rule.created")
    assert (event.actor, event.object_id, event.before, event.after["conditions"]) == (
        admin,
        str(rule.pk),
        None,
        LOW_CONFIDENCE,
    )


def test_update_rule_bumps_the_version_and_audits_before_and_after() -> None:
    QueueFactory(slug="answers")
    rule = create_rule(data={"name": "low", "conditions": LOW_CONFIDENCE, "queue": "answers"}, actor=None)
    rule = update_rule(rule=rule, data={"conditions": [{"field": "confidence", "op": "lt", "value": 0.6}]}, actor=None)
    assert rule.version == 2
    assert list(RoutingRuleVersion.objects.filter(rule=rule).values_list("version", flat=True)) == [2, 1]
    event = AuditEvent.objects.get(action="rule.updated")
    assert event.before["conditions"][0]["value"] == 0.7 and event.after["conditions"][0]["value"] == 0.6
    assert (event.before["version"], event.after["version"]) == (1, 2)
    # Saving the same values again is no edit: no new version, no audit event.
    same = update_rule(
        rule=rule, data={"conditions": [{"field": "confidence", "op": "lt", "value": 0.6}], "name": "low"}, actor=None
    )
    assert same.version == 2 and AuditEvent.objects.filter(action="rule.updated").count() == 1


def test_switching_to_auto_approve_lets_go_of_the_queue() -> None:
    rule = RoutingRuleFactory(name="r", queue=QueueFactory(slug="q"))
    rule = update_rule(rule=rule, data={"action": "auto_approve"}, actor=None)
    assert rule.queue is None and rule.action == "auto_approve"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"position": 1}, "name", "required"),
        ({"name": "taken"}, "name", "a rule named 'taken' already exists"),
        (
            {"name": "x", "conditions": [{"field": "kind", "op": "like", "value": 1}]},
            "conditions",
            "conditions[0].op: unknown op 'like'",
        ),
        ({"name": "x", "sample_rate": 1.5}, "sample_rate", "between 0 and 1"),
        ({"name": "x", "sample_rate": True}, "sample_rate", "between 0 and 1"),
        ({"name": "x", "position": "1"}, "position", "must be an integer"),
        ({"name": "x", "priority": 1.5}, "priority", "must be an integer"),
        ({"name": "x", "enabled": "yes"}, "enabled", "true or false"),
        ({"name": "x", "action": "drop"}, "action", "must be one of route, auto_approve"),
        ({"name": "x", "queue": "nope"}, "queue", "no queue with slug 'nope'"),
        ({"name": "x", "action": "route"}, "queue", "required when action is 'route'"),
        ({"name": "x", "action": "auto_approve", "queue": "q"}, "queue", "must be empty when action is 'auto_approve'"),
        ({"name": "x", "colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_rule_data_is_refused_per_field_and_nothing_is_stored(data: dict, field: str, message: str) -> None:
    QueueFactory(slug="q")
    RoutingRuleFactory(name="taken", queue=QueueFactory(slug="q"))
    with pytest.raises(ValidationError) as error:
        create_rule(data=data, actor=None)
    assert any(message in m for m in error.value.message_dict[field])
    assert RoutingRule.objects.count() == 1 and not RoutingRuleVersion.objects.exists()
    assert not AuditEvent.objects.exists()


def test_delete_rule_keeps_its_versions_and_audits() -> None:
    rule = create_rule(data={"name": "gone", "action": "auto_approve"}, actor=None)
    delete_rule(rule=rule, actor=None)
    assert not RoutingRule.objects.exists()
    assert RoutingRuleVersion.objects.get().rule_name == "gone"
    event = AuditEvent.objects.get(action="rule.deleted")
    assert event.before["name"] == "gone" and event.after is None
