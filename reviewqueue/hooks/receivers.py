"""Receivers of the review signals (sent after the deciding transaction commits)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from reviewqueue.hooks import notify
from reviewqueue.review import signals


@receiver(signals.step_decided, dispatch_uid="hooks.step_decided")
def on_step_decided(sender: Any, *, step_id: int, decision_id: int, **kwargs: Any) -> None:
    notify.publish(step_id, notify.DECIDED)
    from reviewqueue.hooks.services import enqueue_event

    enqueue_event(event_type="step.decided", step_id=step_id)


@receiver(signals.item_escalated, dispatch_uid="hooks.item_escalated")
def on_item_escalated(sender: Any, *, item_id: int, step_id: int, escalated_to_id: int | None, **kwargs: Any) -> None:
    notify.publish(step_id, notify.ESCALATED)
    from reviewqueue.hooks.services import enqueue_event

    enqueue_event(event_type="item.escalated", step_id=step_id, item_id=item_id, escalated_to_id=escalated_to_id)
