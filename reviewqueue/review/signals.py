"""Signals of the review services.

Sent inside the transaction, after (or, for a decision, with) its writes: a receiver may return
`rows.Statement`s, which run in that transaction (on PostgreSQL in the round trip of the
decision's own writes), and whatever its statements' `returned` callbacks do happens in that
transaction too. So what a receiver records (webhook events) is committed with the decision or
escalation, or not at all.

- `step_deciding`: a step is decided, or its decision amended.
- `item_escalating`: an item is escalated.

Sent after the transaction commits, with plain ids, for what must never act on uncommitted
rows (waking agents through Redis or within this process):

- `step_decided`, `item_escalated`.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: step_id
step_deciding = Signal()
# kwargs: item_id, step_id, escalated_to_id (the new item in the escalation queue, or None)
item_escalating = Signal()
# kwargs: step_id, decision_id
step_decided = Signal()
# kwargs: item_id, step_id, escalated_to_id
item_escalated = Signal()
