"""Signals of the review services.

`step_decided` and `item_escalated` are sent after the transaction that caused them commits;
receivers (webhooks, long-poll wake-ups) get plain ids so they never act on uncommitted rows.

`step_deciding` is sent inside the deciding transaction, before the decision's writes run: a
receiver may return `rows.Statement`s to run with them, in the same round trip (on PostgreSQL),
and whatever its statements' `returned` callbacks do happens in that transaction too. When any
receiver returned statements, `step_decided` is sent with `announced=True`.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: step_id
step_deciding = Signal()
# kwargs: step_id, decision_id, announced
step_decided = Signal()
# kwargs: item_id, step_id, escalated_to_id (the new item in the escalation queue, or None)
item_escalated = Signal()
