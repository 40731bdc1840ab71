"""`load_rules` keeps each process's last rules while their signature holds (PostgreSQL), and
the next load sees any change to a rule or a rule's queue, however it was made: through the
services, a plain save, a queryset update (no signals), a deletion, a rolled-back edit."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import transaction

from reviewqueue.review.models import Queue
from reviewqueue.routing.models import RoutingRule
from reviewqueue.routing.services import create_rule, delete_rule, load_rules, update_rule
from tests.factories import QueueFactory, RoutingRuleFactory

pytestmark = pytest.mark.django_db

LOW = [{"field": "confidence", "op": "lt", "value": 0.5}]


def seen(rules: list[RoutingRule]) -> list[tuple]:
    """Everything routing and ingest read from the rules and their queues."""
    return [
        (
            r.pk,
            r.name,
            r.position,
            r.enabled,
            r.conditions,
            r.sample_rate,
            r.action,
            r.priority,
            r.version,
            r.queue_id,
            r.queue.slug if r.queue else None,
            r.queue.sla_seconds if r.queue else None,
        )
        for r in rules
    ]


def fresh() -> list[tuple]:
    return seen(list(RoutingRule.objects.filter(enabled=True).select_related("queue").order_by("position", "id")))


@pytest.fixture
def rules() -> tuple[RoutingRule, RoutingRule, Queue]:
    queue = QueueFactory(slug="triage", sla_seconds=60)
    first = RoutingRuleFactory(name="low", position=1, queue=queue, conditions=LOW)
    second = RoutingRuleFactory(name="later", position=2, queue=queue, enabled=False)
    return first, second, queue


@pytest.mark.postgres
def test_unchanged_rules_are_reused_for_one_small_query(rules, django_assert_num_queries) -> None:
    first = load_rules()
    with django_assert_num_queries(1):
        again = load_rules()
    assert again is first and seen(again) == fresh()


CHANGES: dict[str, Callable[[RoutingRule, RoutingRule, Queue], object]] = {
    "update_rule": lambda r, o, q: update_rule(rule=r, data={"conditions": [*LOW, _kind()]}, actor=None),
    "save": lambda r, o, q: (setattr(r, "priority", 9), r.save()),
    "queryset update": lambda r, o, q: RoutingRule.objects.filter(pk=r.pk).update(sample_rate=0.25),
    "enable another": lambda r, o, q: RoutingRule.objects.filter(pk=o.pk).update(enabled=True),
    "reorder": lambda r, o, q: RoutingRule.objects.filter(pk=o.pk).update(enabled=True, position=0),
    "create": lambda r, o, q: create_rule(data={"name": "new", "position": 5, "queue": "triage"}, actor=None),
    "delete": lambda r, o, q: delete_rule(rule=r, actor=None),
    "queue sla": lambda r, o, q: Queue.objects.filter(pk=q.pk).update(sla_seconds=7200),
    "queue slug": lambda r, o, q: (setattr(q, "slug", "renamed"), q.save()),
}


def _kind() -> dict:
    return {"field": "kind", "op": "eq", "value": "llm"}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_the_next_load_sees_every_change(rules, change: str) -> None:
    load_rules()
    load_rules()
    CHANGES[change](*rules)
    assert seen(load_rules()) == fresh()


def test_a_rolled_back_change_is_forgotten(rules) -> None:
    before = seen(load_rules())
    with transaction.atomic():
        RoutingRule.objects.filter(pk=rules[0].pk).update(conditions=[_kind()])
        assert load_rules()[0].conditions == [_kind()]
        transaction.set_rollback(True)
    assert seen(load_rules()) == before == fresh()
