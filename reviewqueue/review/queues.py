"""Queue configuration: validation, create, update and delete with audit events. One
implementation for the API (staff) and `apply_config` (queues as code)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from reviewqueue.core import audit
from reviewqueue.review.models import OPEN_ITEM_STATUSES, Queue, ReviewItem, TimeoutAction
from reviewqueue.review.services import Conflict, QueueError, validate_rubric

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser as User

QUEUE_FIELDS = (
    "slug",
    "name",
    "instructions",
    "reviews_required",
    "lease_seconds",
    "sla_seconds",
    "timeout_action",
    "escalation_queue",
    "members",
    "groups",
    "rubric",
)
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,60}$")
MAX_LEASE_SECONDS = 7 * 24 * 3600


def queue_fields(queue: Queue) -> dict[str, Any]:
    """A queue's own fields in the API's names: all but its members and groups."""
    return {
        "slug": queue.slug,
        "name": queue.name,
        "instructions": queue.instructions,
        "reviews_required": queue.reviews_required,
        "lease_seconds": queue.lease_seconds,
        "sla_seconds": queue.sla_seconds,
        "timeout_action": queue.timeout_action,
        "escalation_queue": queue.escalation_queue.slug if queue.escalation_queue_id else None,
        "rubric": queue.rubric,
    }


def queue_state(queue: Queue) -> dict[str, Any]:
    """A queue in the API's field names, members and groups included (also the audit
    before/after)."""
    return {
        **queue_fields(queue),
        "members": sorted(queue.members.values_list("username", flat=True)) if queue.pk else [],
        "groups": sorted(queue.groups.values_list("name", flat=True)) if queue.pk else [],
    }


def _int_field(data: Mapping[str, Any], key: str, errors: dict, low: int, high: int) -> int | None:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        errors[key] = ["must be a whole number"]
    elif not low <= value <= high:
        errors[key] = [f"must be from {low} to {high}"]
    else:
        return value
    return None


def _clean_queue_data(data: Any, queue: Queue | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validated values in the API's form (for comparing) and the objects to store."""
    if not isinstance(data, Mapping):
        raise QueueError(errors={"non_field_errors": ["expected an object"]})
    errors: dict[str, list[str]] = {}
    for key in data:
        if key not in QUEUE_FIELDS:
            errors[str(key)] = [f"unknown field; expected: {', '.join(QUEUE_FIELDS)}"]
    values: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    if queue is None:
        for key in ("slug", "name"):
            if key not in data:
                errors[key] = ["required"]
    if "slug" in data:
        slug = data["slug"]
        if not isinstance(slug, str) or not SLUG_RE.match(slug):
            errors["slug"] = ["letters, digits, '-' and '_' only (1 to 60 characters)"]
        elif Queue.objects.filter(slug=slug).exclude(pk=queue.pk if queue else None).exists():
            errors["slug"] = [f"a queue '{slug}' already exists"]
        else:
            values["slug"] = slug
    if "name" in data:
        name = data["name"]
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > 120:
            errors["name"] = ["required, at most 120 characters"]
        else:
            values["name"] = name.strip()
    if "instructions" in data:
        if data["instructions"] is None or isinstance(data["instructions"], str):
            values["instructions"] = data["instructions"] or ""
        else:
            errors["instructions"] = ["must be text (markdown)"]
    if "reviews_required" in data:
        value = _int_field(data, "reviews_required", errors, 1, 5)
        if value is not None:
            values["reviews_required"] = value
    if "lease_seconds" in data:
        value = _int_field(data, "lease_seconds", errors, 10, MAX_LEASE_SECONDS)
        if value is not None:
            values["lease_seconds"] = value
    if "sla_seconds" in data:
        if data["sla_seconds"] is None:
            values["sla_seconds"] = None
        else:
            value = _int_field(data, "sla_seconds", errors, 1, 2**31 - 1)
            if value is not None:
                values["sla_seconds"] = value
    if "timeout_action" in data:
        if data["timeout_action"] in TimeoutAction.values:
            values["timeout_action"] = data["timeout_action"]
        else:
            errors["timeout_action"] = [f"must be one of: {', '.join(TimeoutAction.values)}"]
    if "escalation_queue" in data:
        target = data["escalation_queue"]
        own_slug = values.get("slug", queue.slug if queue else None)
        if target is None or target == "":
            values["escalation_queue"], objects["escalation_queue"] = None, None
        elif not isinstance(target, str):
            errors["escalation_queue"] = ["must be a queue slug or null"]
        elif target == own_slug or (queue is not None and target == queue.slug):
            errors["escalation_queue"] = ["a queue cannot escalate to itself"]
        else:
            found = Queue.objects.filter(slug=target).first()
            if found is None:
                errors["escalation_queue"] = [f"no queue '{target}'"]
            else:
                values["escalation_queue"], objects["escalation_queue"] = target, found
    for key, model, field in (("members", get_user_model(), "username"), ("groups", Group, "name")):
        if key not in data:
            continue
        names = data[key] if data[key] is not None else []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            errors[key] = ["must be a list of " + ("usernames" if key == "members" else "group names")]
            continue
        found = {getattr(obj, field): obj for obj in model.objects.filter(**{f"{field}__in": names})}
        unknown = sorted(set(names) - set(found))
        if unknown:
            kind = "user" if key == "members" else "group"
            errors[key] = [f"no such {kind}{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}"]
        else:
            values[key] = sorted(set(names))
            objects[key] = list(found.values())
    if "rubric" in data:
        try:
            values["rubric"] = validate_rubric(data["rubric"])
        except QueueError as exc:
            errors.update(exc.errors)
    if errors:
        raise QueueError(errors=errors)
    return values, objects


def save_queue(*, data: Mapping[str, Any], actor: User | None, queue: Queue | None = None) -> Queue:
    """Create a queue (`queue=None`) or update the given fields of one (a partial update), with
    validation (QueueError naming the fields) and an audit event holding before/after.

    Idempotent: when an update changes nothing, nothing is saved or audited. The returned queue
    carries `queue.changed` (bool) saying whether anything was written (apply_config reports it).
    Permission checks are the caller's (the API allows staff only)."""
    values, objects = _clean_queue_data(data, queue)
    before = queue_state(queue) if queue is not None else None
    if before is not None and all(before[key] == value for key, value in values.items()):
        queue.changed = False  # type: ignore[attr-defined]
        return queue
    now = timezone.now()
    with transaction.atomic():
        target = queue if queue is not None else Queue(created_at=now)
        for key, value in values.items():
            if key in ("members", "groups"):
                continue
            setattr(target, key, objects[key] if key == "escalation_queue" else value)
        target.updated_at = now
        target.save()
        if "members" in objects:
            target.members.set(objects["members"])
        if "groups" in objects:
            target.groups.set(objects["groups"])
        after = queue_state(target)
        audit.record(
            "queue.created" if before is None else "queue.updated", target, actor=actor, before=before, after=after
        )
    target.changed = True  # type: ignore[attr-defined]
    return target


def delete_queue(*, queue: Queue, actor: User | None) -> None:
    """Delete a queue that has never held items and that no routing rule points at (history and
    routing would otherwise lose their target): Conflict (409) naming what is in the way."""
    items = ReviewItem.objects.filter(queue=queue)
    open_count = items.filter(status__in=OPEN_ITEM_STATUSES).count()
    total = items.count()
    if total:
        raise Conflict(
            f"Queue '{queue.slug}' has {total} item(s) ({open_count} open); only an empty queue can be deleted."
        )
    rules = list(queue.rules.values_list("name", flat=True))
    if rules:
        raise Conflict(f"Queue '{queue.slug}' is used by routing rule(s): {', '.join(sorted(rules))}.")
    with transaction.atomic():
        before = queue_state(queue)
        pk = queue.pk
        queue.delete()
        audit.record("queue.deleted", object_type="queue", object_id=pk, actor=actor, before=before)
