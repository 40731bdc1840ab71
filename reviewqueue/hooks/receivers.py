"""Receivers of the review signals: wake the agents waiting on a step and record the event for
the agent's webhooks. With the decision's own writes where the NOTIFY is a statement
(`step_deciding`, inside the deciding transaction); otherwise after the commit (`step_decided`,
`item_escalated`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.dispatch import receiver

from reviewqueue.core import rows
from reviewqueue.hooks import notify
from reviewqueue.hooks.models import Webhook
from reviewqueue.review import signals

logger = logging.getLogger(__name__)


@receiver(signals.step_deciding, dispatch_uid="hooks.step_deciding")
def on_step_deciding(sender: Any, *, step_id: int, **kwargs: Any) -> list[rows.Statement]:
    """Where the NOTIFY is a statement (PostgreSQL transport, `rows.batches()`): the wake-up and
    the webhook read go with the decision's writes, in their round trip and their transaction.
    PostgreSQL delivers a NOTIFY at the commit (never for a rollback), and the webhook events are
    recorded in the deciding transaction (none is lost should the process die after the commit)."""
    from reviewqueue.hooks.services import enqueue_event

    def record(webhooks: list[Webhook]) -> None:
        enqueue_event(event_type="step.decided", step_id=step_id, webhooks=webhooks)

    return _wake_and_read_statements(step_id, notify.DECIDED, record)  # none: on_step_decided


@receiver(signals.step_decided, dispatch_uid="hooks.step_decided")
def on_step_decided(sender: Any, *, step_id: int, decision_id: int, announced: bool = False, **kwargs: Any) -> None:
    from reviewqueue.hooks.services import enqueue_event

    if announced:  # done in the deciding transaction (on_step_deciding)
        return
    webhooks = _publish_and_read_webhooks(step_id, notify.DECIDED)
    enqueue_event(event_type="step.decided", step_id=step_id, webhooks=webhooks)


@receiver(signals.item_escalated, dispatch_uid="hooks.item_escalated")
def on_item_escalated(sender: Any, *, item_id: int, step_id: int, escalated_to_id: int | None, **kwargs: Any) -> None:
    from reviewqueue.hooks.services import enqueue_event

    webhooks = _publish_and_read_webhooks(step_id, notify.ESCALATED)
    enqueue_event(
        event_type="item.escalated",
        step_id=step_id,
        item_id=item_id,
        escalated_to_id=escalated_to_id,
        webhooks=webhooks,
    )


def _wake_and_read_statements(step_id: int, event: str, then: Callable[[list[Webhook]], None]) -> list[rows.Statement]:
    """The NOTIFY of `event` and the read of the step's webhooks (given to `then`), as statements
    for one round trip; none where the NOTIFY is not a statement (Redis, SQLite) or statements do
    not go together (`rows.batches()`)."""
    from reviewqueue.hooks.services import step_webhooks_statement

    publish = notify.publish_statement(step_id, event)
    if publish is None or not rows.batches():
        return []
    return [publish, step_webhooks_statement(step_id, then)]


def _publish_and_read_webhooks(step_id: int, event: str) -> list[Webhook] | None:
    """After a commit: `notify.publish` and the read of the step's webhooks, in one round trip
    where they can go together. None: not read (the caller reads them)."""
    webhooks: list[Webhook] = []
    statements = _wake_and_read_statements(step_id, event, webhooks.extend)
    if not statements:
        notify.publish(step_id, event)
        return None
    try:
        rows.run(*statements)
    except Exception:  # as publish: a lost wake-up costs the agent at most its wait timeout
        logger.exception("could not publish %s:%s", event, step_id)
        return None
    return webhooks
