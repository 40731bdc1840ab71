"""Receivers of the review signals: record the event for the agent's webhooks and wake the
agents waiting on the step.

The events are recorded in the transaction that decides (or escalates) the step, on every
database: a step is never decided without its events, and none is lost should the process die
right after the commit. On PostgreSQL the read of the webhooks goes with the decision's own
writes, in one round trip. The wake-up goes with them too where it is a NOTIFY (the
`postgres` transport: PostgreSQL delivers it at the commit, never for a rollback); through
Redis or within this process it is sent after the commit (`step_decided`, `item_escalated`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.dispatch import receiver

from reviewqueue.core import rows
from reviewqueue.hooks import notify
from reviewqueue.hooks.models import Webhook
from reviewqueue.review import signals


@receiver(signals.step_deciding, dispatch_uid="hooks.step_deciding")
def on_step_deciding(sender: Any, *, step_id: int, **kwargs: Any) -> list[rows.Statement]:
    from reviewqueue.hooks.services import enqueue_event

    def record(webhooks: list[Webhook]) -> None:
        enqueue_event(event_type="step.decided", step_id=step_id, webhooks=webhooks)

    return _record_and_wake(step_id, notify.DECIDED, record)


@receiver(signals.item_escalating, dispatch_uid="hooks.item_escalating")
def on_item_escalating(
    sender: Any, *, item_id: int, step_id: int, escalated_to_id: int | None, **kwargs: Any
) -> list[rows.Statement]:
    from reviewqueue.hooks.services import enqueue_event

    def record(webhooks: list[Webhook]) -> None:
        enqueue_event(
            event_type="item.escalated",
            step_id=step_id,
            item_id=item_id,
            escalated_to_id=escalated_to_id,
            webhooks=webhooks,
        )

    return _record_and_wake(step_id, notify.ESCALATED, record)


@receiver(signals.step_decided, dispatch_uid="hooks.step_decided")
def on_step_decided(sender: Any, *, step_id: int, **kwargs: Any) -> None:
    _wake_after_commit(step_id, notify.DECIDED)


@receiver(signals.item_escalated, dispatch_uid="hooks.item_escalated")
def on_item_escalated(sender: Any, *, step_id: int, **kwargs: Any) -> None:
    _wake_after_commit(step_id, notify.ESCALATED)


def _record_and_wake(step_id: int, event: str, record: Callable[[list[Webhook]], None]) -> list[rows.Statement]:
    """The statements to run in the transaction: the NOTIFY of `event` where the wake-up is one
    (else `_wake_after_commit` sends it), and the read of the step's webhooks, which `record`
    gets."""
    from reviewqueue.hooks.services import step_webhooks_statement

    publish = notify.publish_statement(step_id, event)
    return [*([publish] if publish is not None else []), step_webhooks_statement(step_id, record)]


def _wake_after_commit(step_id: int, event: str) -> None:
    if not notify.publishes_in_transaction():  # else a NOTIFY went with the transaction
        notify.publish(step_id, event)
