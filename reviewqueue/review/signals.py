"""Signals sent by the review services after the transaction that caused them commits.

Receivers (webhooks, long-poll wake-ups) get plain ids so they never act on uncommitted rows.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: step_id, decision_id
step_decided = Signal()
# kwargs: item_id, step_id, escalated_to_id (the new item in the escalation queue, or None)
item_escalated = Signal()
