"""`rows.run`: several hand-written writes in one round trip on PostgreSQL, one by one elsewhere,
with the same results and the same errors as when run alone."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from reviewqueue.core import audit, rows
from reviewqueue.core.models import AuditEvent, Step
from reviewqueue.review.models import Review
from tests.factories import ReviewItemFactory

pytestmark = pytest.mark.django_db


def count_queries(seen: list[str]):
    """Note each round trip but the test transaction's savepoints."""

    def log(execute, sql, params, many, context):
        if "SAVEPOINT" not in sql:
            seen.append(sql)
        return execute(sql, params, many, context)

    return log


def test_writes_run_in_order_set_primary_keys_and_store_what_the_orm_stores(alice, on_postgres) -> None:
    item = ReviewItemFactory()
    step = item.step
    step.status, step.updated_at = "approved", timezone.now()
    review = Review(item=item, reviewer=alice, verdict="approve", labels={"a": [1, "é"]}, created_at=timezone.now())
    events = [audit.audit_event("x.one", item, actor=alice, after={"n": 1}), audit.audit_event("x.two", step)]
    seen: list[str] = []
    with connection.execute_wrapper(count_queries(seen)), transaction.atomic():
        rows.run(
            rows.insert_statement([review]),
            rows.update_statement(step, ["status", "updated_at"]),
            rows.insert_statement([]),  # nothing to insert: skipped
            *audit.statements(events),
        )
    assert len(seen) == (1 if on_postgres else 3)
    assert review.pk is not None and not review._state.adding
    stored = Review.objects.get(pk=review.pk)
    assert (stored.item_id, stored.reviewer_id, stored.labels) == (item.pk, alice.pk, {"a": [1, "é"]})
    assert Step.objects.get(pk=step.pk).status == "approved"
    assert [e.pk for e in events] == list(AuditEvent.objects.order_by("id").values_list("pk", flat=True))
    assert [e.action for e in AuditEvent.objects.order_by("id")] == ["x.one", "x.two"]


def test_a_failing_write_raises_as_alone_and_the_transaction_undoes_the_others(alice, on_postgres) -> None:
    item = ReviewItemFactory()
    Review.objects.create(item=item, reviewer=alice, verdict="approve")
    again = Review(item=item, reviewer=alice, verdict="reject")
    event = audit.audit_event("x.before", item)
    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        rows.run(*audit.statements([event]), rows.insert_statement([again]))
    if on_postgres:  # the constraint's name, which submit_review maps to its 409
        assert "review_one_per_reviewer_per_item" in str(raised.value)
    assert not AuditEvent.objects.filter(action="x.before").exists() and again.pk is None


def test_with_server_side_binding_the_writes_go_one_by_one(alice, monkeypatch) -> None:
    """A prepared statement holds one command: then `run` sends them separately."""
    options = {**(connection.settings_dict.get("OPTIONS") or {}), "server_side_binding": True}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    item = ReviewItemFactory()
    events = [audit.audit_event("x.one", item), audit.audit_event("x.two", item)]
    seen: list[str] = []
    with connection.execute_wrapper(count_queries(seen)), transaction.atomic():
        first, second = audit.statements(events[:1]), audit.statements(events[1:])
        rows.run(rows.update_statement(item, ["priority"]), *first, *second)
    assert len(seen) == 3 and all(e.pk for e in events)
