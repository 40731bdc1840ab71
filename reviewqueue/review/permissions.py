"""Access helpers: one per object kind, called first by every API view and HTML view.

A queue or item the user may not review is answered with 404 (Http404), so queue names and item
ids do not leak to non-members; staff-only operations answer 403 (PermissionDenied).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.db.models.expressions import RawSQL
from django.http import Http404

from reviewqueue.core import rows
from reviewqueue.review.models import Queue, ReviewItem
from reviewqueue.review.services import can_review, membership_sql, note_membership_checked

# A hand-written query (see core/rows): the ORM's OR over two many-to-many joins compiles and
# plans slowly, and this runs on every claim. Table names come from the models.
_QUEUE = rows.Columns(Queue, "q")
_QUEUE_FOR_MEMBER = f"SELECT {_QUEUE.sql} FROM {Queue._meta.db_table} q WHERE q.slug = %s AND {membership_sql('q.id')}"


def require_staff(user: Any) -> None:
    if not getattr(user, "is_staff", False):
        raise PermissionDenied("Only staff may do this.")


def queue_for_reviewer(user: Any, slug: str) -> Queue:
    """The queue, if `user` may review it (membership, direct or by group: the rule of
    `services.can_review`, checked in the same query that finds the queue); else 404."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        raise Http404("No such queue.")
    found = rows.fetch_one(_QUEUE_FOR_MEMBER, [slug, user.pk, user.pk], _QUEUE)
    if found is None:
        raise Http404("No such queue.")
    return note_membership_checked(found[0], user)


def queue_for_viewer(user: Any, slug: str) -> Queue:
    """The queue for reading its configuration: staff, or a member; else 404."""
    queue = Queue.objects.select_related("escalation_queue").filter(slug=slug).first()
    if queue is None or not (getattr(user, "is_staff", False) or can_review(user=user, queue=queue)):
        raise Http404("No such queue.")
    return queue


def queue_for_staff(user: Any, slug: str) -> Queue:
    """The queue, for administering it: 403 for non-staff, then 404 when it does not exist."""
    require_staff(user)
    queue = Queue.objects.select_related("escalation_queue").filter(slug=slug).first()
    if queue is None:
        raise Http404("No such queue.")
    return queue


def _item(item_id: Any) -> ReviewItem:
    try:
        return ReviewItem.objects.select_related("queue", "step", "claimed_by", "assigned_to").get(pk=int(item_id))
    except (ReviewItem.DoesNotExist, ValueError, TypeError):
        raise Http404("No such item.") from None


def item_for_reviewer(user: Any, item_id: Any) -> ReviewItem:
    """An item in a queue `user` reviews (staff may see every item); else 404. Whether the user
    holds the lease is the services' business (they answer 409)."""
    item = _item(item_id)
    if not (getattr(user, "is_staff", False) or can_review(user=user, queue=item.queue)):
        raise Http404("No such item.")
    return item


def item_for_viewer(user: Any, item_id: Any) -> ReviewItem:
    """An item's full detail: staff, or the reviewer holding its claim right now; else 404."""
    item = _item(item_id)
    if not (getattr(user, "is_staff", False) or (user.is_authenticated and item.claimed_by_id == user.pk)):
        raise Http404("No such item.")
    return item


def item_for_staff(user: Any, item_id: Any) -> ReviewItem:
    require_staff(user)
    return _item(item_id)


def attachment_for_viewer(user: Any, attachment_id: Any) -> Any:
    """An image attachment: staff, or a reviewer of a queue that holds an item for its step; else 404."""
    from reviewqueue.core.models import Attachment

    try:
        attachment = Attachment.objects.get(pk=int(attachment_id))
    except (Attachment.DoesNotExist, ValueError, TypeError):
        raise Http404("No such attachment.") from None
    if getattr(user, "is_staff", False):
        return attachment
    if not getattr(user, "is_authenticated", False):
        raise Http404("No such attachment.")
    member_of = Queue.objects.filter(Q(members=user) | Q(groups__user=user)).values("pk")
    if not ReviewItem.objects.filter(step_id=attachment.step_id, queue__in=member_of).exists():
        raise Http404("No such attachment.")
    return attachment


def review_for_owner(user: Any, review_id: Any) -> Any:
    """One of `user`'s own reviews (with its item, queue, step and decision); else 404."""
    from reviewqueue.review.models import Review

    try:
        return Review.objects.select_related("item__queue", "item__step__agent").get(pk=int(review_id), reviewer=user)
    except (Review.DoesNotExist, ValueError, TypeError):
        raise Http404("No such review.") from None


def item_in_queue_for_reviewer(user: Any, slug: str, item_id: Any) -> ReviewItem:
    """An item of queue `slug`, if `user` may review that queue (the rule of `queue_for_reviewer`),
    with its queue selected, in one query; else 404. The step's input (often a long
    conversation) is loaded only if the caller reads it."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        raise Http404("No such item.")
    member = RawSQL(membership_sql(f'"{ReviewItem._meta.db_table}"."queue_id"'), [user.pk, user.pk])
    try:
        item = (
            ReviewItem.objects.select_related("queue", "step")
            .defer("step__input")
            .filter(ExpressionWrapper(member, output_field=BooleanField()))
            .get(pk=int(item_id), queue__slug=slug)
        )
    except (ReviewItem.DoesNotExist, ValueError, TypeError):
        raise Http404("No such item.") from None
    note_membership_checked(item.queue, user)
    return item
