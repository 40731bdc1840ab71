"""Reads for the review domain, shaped where they are used."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from reviewqueue.core.models import Step, StepStatus
from reviewqueue.review.models import OPEN_ITEM_STATUSES, ItemStatus, Queue, Review, ReviewItem


def step_decision(step: Step) -> dict[str, Any]:
    """The decision body of DESIGN §4: what an agent waiting on a step reads.

    `step` should come with `decision` and `decision__reviewer` selected (one query)."""
    if step.status == StepStatus.PENDING_REVIEW:
        return {"status": "pending", "output": None, "reason": "", "reviewer": None, "decided_at": None}
    if step.status == StepStatus.AUTO_APPROVED:
        return {
            "status": "auto_approved",
            "output": step.output,
            "reason": "",
            "reviewer": None,
            "decided_at": step.created_at.isoformat(),
        }
    decision = getattr(step, "decision", None)
    if decision is None:  # decided status without a row: should not happen, answer safely
        return {"status": step.status, "output": step.output, "reason": "", "reviewer": None, "decided_at": None}
    return {
        "status": step.status,
        "output": decision.output,
        "reason": decision.reason,
        "reviewer": decision.reviewer.get_username() if decision.reviewer else None,
        "decided_at": decision.decided_at.isoformat(),
    }


def _count(qs: QuerySet) -> Coalesce:
    """A correlated COUNT(*) subquery (each one walks an index; no join fan-out)."""
    return Coalesce(Subquery(qs.order_by().values("queue").annotate(n=Count("*")).values("n")[:1]), 0)


def queues_for_user(user: Any, *, include_all: bool = False) -> QuerySet[Queue]:
    """Queues `user` reviews (directly or through a group) — every queue with `include_all` (staff) —
    annotated, in one query, with pending_count, claimed_count (live leases), overdue_count (open
    items past due) and done_today (reviews this user submitted in the queue since local midnight)."""
    now = timezone.now()
    start_of_day = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    items = ReviewItem.objects.filter(queue=OuterRef("pk"))
    queues = Queue.objects.all()
    if not include_all:
        member_of = Queue.objects.filter(Q(members=user) | Q(groups__user=user)).values("pk")
        queues = queues.filter(pk__in=member_of)
    done = (
        Review.objects.filter(item__queue=OuterRef("pk"), reviewer=user, created_at__gte=start_of_day)
        .order_by()
        .values("item__queue")
        .annotate(n=Count("*"))
        .values("n")[:1]
    )
    return queues.annotate(
        pending_count=_count(items.filter(status=ItemStatus.PENDING)),
        claimed_count=_count(items.filter(status=ItemStatus.CLAIMED, lease_expires_at__gt=now)),
        overdue_count=_count(items.filter(status__in=OPEN_ITEM_STATUSES, due_at__lt=now)),
        done_today=Coalesce(Subquery(done), 0),
    ).order_by("name")


def open_items(queue: Queue) -> QuerySet[ReviewItem]:
    """The queue's open items in claim order (for staff screens)."""
    return (
        ReviewItem.objects.filter(queue=queue, status__in=OPEN_ITEM_STATUSES)
        .select_related("step", "claimed_by", "assigned_to")
        .order_by("-blocking", "-priority", "id")
    )


def escalated_items() -> QuerySet[ReviewItem]:
    """Items waiting for staff to adjudicate (escalated, no copy in an escalation queue)."""
    return (
        ReviewItem.objects.filter(status=ItemStatus.ESCALATED, escalations__isnull=True)
        .select_related("queue", "step")
        .order_by("-priority", "id")
    )
