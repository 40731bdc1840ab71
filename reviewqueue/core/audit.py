"""Writing the audit trail: one call per state or configuration change."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models

from reviewqueue.core import rows
from reviewqueue.core.models import Agent, AuditEvent


def audit_event(
    action: str,
    obj: models.Model | None = None,
    *,
    object_type: str = "",
    object_id: Any = "",
    actor: AbstractBaseUser | None = None,
    agent: Agent | None = None,
    before: Any = None,
    after: Any = None,
) -> AuditEvent:
    """Build (unsaved) an audit event. `action` is "<thing>.<verb>", e.g. "item.claimed"."""
    if obj is not None:
        object_type = object_type or obj._meta.model_name or ""
        object_id = obj.pk
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return AuditEvent(
        actor=user,
        actor_agent=agent,
        actor_label=(user.get_username() if user else (f"agent:{agent.name}" if agent else "system")),
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        before=before,
        after=after,
    )


def record(action: str, obj: models.Model | None = None, **kwargs: Any) -> AuditEvent:
    """Save one audit event; call inside the transaction that makes the change."""
    event = audit_event(action, obj, **kwargs)
    rows.insert([event])
    return event


def record_many(events: list[AuditEvent]) -> None:
    """Save audit events in one INSERT per 500 (VALUES rows: Django's UNNEST bulk insert plans
    slowly with JSON columns, and these batches are small)."""
    rows.run(*statements(events))


def statements(events: list[AuditEvent]) -> list[rows.Statement]:
    """The INSERTs that save `events` (one per 500), for `rows.run` with other writes."""
    return [rows.insert_statement(events[start : start + 500]) for start in range(0, len(events), 500)]


def insert_logged_statement(obj: models.Model, event: AuditEvent) -> rows.Statement:
    """PostgreSQL: the INSERT of the unsaved `obj` and of `event` about it (its `object_id` the
    new row's primary key) in one statement, a data-modifying CTE, so that both can go with other
    writes in one `rows.run`. Running it sets both primary keys and the event's `object_id`."""
    saved = rows.insert_statement([obj])
    log = rows.insert_select_statement(event, "saved", {"object_id": f"CAST(saved.{obj._meta.pk.column} AS text)"})

    def returned(found: list[tuple[Any, ...]]) -> None:
        ((obj_pk, event_pk),) = found
        saved.returned([(obj_pk,)])  # type: ignore[misc]
        log.returned([(event_pk,)])  # type: ignore[misc]
        event.object_id = str(obj_pk)

    sql = (
        f"WITH saved AS ({saved.sql}), logged AS ({log.sql})"
        f" SELECT (SELECT {obj._meta.pk.column} FROM saved), (SELECT {event._meta.pk.column} FROM logged)"
    )
    return rows.Statement(sql, [*saved.params, *log.params], returned)
