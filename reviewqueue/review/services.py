"""The review workflow: claim, review, release, resolve, escalate, amend and sweep (queue configuration: `queues.py`).

One implementation, called by the API, the reviewer UI, management commands and tasks.

Concurrency (DESIGN §3): every write here runs in one transaction. Claiming locks the chosen row
with `SELECT … FOR UPDATE SKIP LOCKED` (PostgreSQL), so concurrent reviewers never wait on each
other and never get the same item; every later change to an item (review, release, heartbeat,
adjudication) locks the item row first and re-checks its state under the lock.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from reviewqueue.core import audit, rows
from reviewqueue.core.models import AuditEvent, Step, StepStatus
from reviewqueue.review import signals
from reviewqueue.review.models import (
    OPEN_ITEM_STATUSES,
    Decision,
    DecisionMethod,
    ItemStatus,
    Queue,
    Review,
    ReviewItem,
    TimeoutAction,
    Verdict,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser as User
else:
    User = Any


# --- errors -------------------------------------------------------------------------------------


def _summarise(errors: Mapping[str, Any]) -> str:
    """`{"reason": ["required for reject"]}` -> "reason: required for reject" (first problem per field)."""

    def first(value: Any) -> str:
        if isinstance(value, Mapping):
            return "; ".join(f"{k}: {first(v)}" for k, v in value.items())
        if isinstance(value, list | tuple):
            return " ".join(first(v) for v in value)
        return str(value)

    return "; ".join(f"{field}: {first(value)}" for field, value in errors.items())


class ReviewError(Exception):
    """A refused review operation. `errors` maps field names to lists of messages (labels nest:
    `{"labels": {"tone": [...]}}`); `message` is one readable line; `status_code` the HTTP answer."""

    status_code = 400

    def __init__(self, message: str = "", *, errors: Mapping[str, Any] | None = None) -> None:
        self.errors: dict[str, Any] = dict(errors or {})
        self.message = message or _summarise(self.errors)
        super().__init__(self.message)


class LeaseLost(ReviewError):
    """The item is not (or no longer) claimed by this user: lease expired, released, held by another."""

    status_code = 409


class Conflict(ReviewError):
    """The item is not in a state that allows the operation (e.g. already resolved)."""

    status_code = 409


class NotAMember(ReviewError):
    status_code = 403


class NotAllowed(ReviewError):
    """Staff only."""

    status_code = 403


class ItemNotFound(ReviewError):
    status_code = 404


class QueueError(ReviewError):
    """Invalid queue configuration (400) — or, with status 409, a queue that cannot be deleted."""


# --- membership -----------------------------------------------------------------------------------


def can_review(*, user: User, queue: Queue) -> bool:
    """Members of the queue, directly or through one of its groups. Staff are not implicitly members.
    A queue instance that an access helper loaded for this user with the membership already checked
    (see `note_membership_checked`) costs no second query."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if getattr(queue, "_membership_checked_for", None) == user.pk:
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {Queue._meta.db_table} q WHERE q.id = %s AND {membership_sql('q.id')}",
            [queue.pk, user.pk, user.pk],
        )
        return cursor.fetchone() is not None


def membership_sql(queue_id: str) -> str:
    """SQL that is true when the user is a member of the queue whose id is the SQL expression
    `queue_id` (a column, not input), directly or through a group: the rule of `can_review`, for
    queries that check access in the statement that reads the object. Takes the user's id as two
    parameters. Two EXISTS probes of the membership tables' indexes (cheap to plan, unlike joins)."""
    members, groups = Queue.members.through._meta.db_table, Queue.groups.through._meta.db_table
    user_groups = get_user_model().groups.through._meta.db_table
    return (
        f"(EXISTS (SELECT 1 FROM {members} qm WHERE qm.queue_id = {queue_id} AND qm.user_id = %s)"
        f" OR EXISTS (SELECT 1 FROM {groups} qg JOIN {user_groups} ug ON ug.group_id = qg.group_id"
        f" WHERE qg.queue_id = {queue_id} AND ug.user_id = %s))"
    )


def note_membership_checked(queue: Queue, user: User) -> Queue:
    """Mark this queue instance (loaded within the current request) as checked for `user`'s membership."""
    queue._membership_checked_for = user.pk  # type: ignore[attr-defined]
    return queue


def _require_staff(actor: User | None) -> None:
    if actor is None or not getattr(actor, "is_staff", False):
        raise NotAllowed("Only staff may do this.")


# --- claiming -------------------------------------------------------------------------------------


def _lock(qs: Any) -> Any:
    """Lock only the item rows (not joined queue/step rows), skipping rows others hold."""
    return qs.select_for_update(skip_locked=True, of=("self",))


# The claim is raw SQL: one UPDATE … RETURNING in the common case (the next pending item nobody
# is assigned), instead of three ORM queries compiled on every claim. Table names come from the
# models (not input); 'pending' and 'claimed' are literals so that both planners (PostgreSQL and
# SQLite) match the partial index `item_claim_order` (WHERE status = 'pending'); every value is a
# parameter.
_ITEMS = ReviewItem._meta.db_table
_REVIEWS = Review._meta.db_table
_CLAIMED = rows.Columns(ReviewItem, "")  # RETURNING list of the claimed row
_ITEM_TYPE = ReviewItem._meta.model_name or ""  # audit events' object_type of an item
_CANDIDATE = rows.Columns(ReviewItem, "c")
_CLAIM_SET = "status = 'claimed', claimed_by_id = %s, claimed_at = %s, lease_expires_at = %s"
# The tiers after the live claim, in order (see `claim_next_item`): conditions on the candidate `c`.
_TIER_ASSIGNED = (
    "c.assigned_to_id = %s AND (c.status = 'pending' OR (c.status = 'claimed' AND c.lease_expires_at <= %s))"
)
_TIER_PENDING = "c.status = 'pending' AND c.assigned_to_id IS NULL"
_TIER_EXPIRED = "c.status = 'claimed' AND c.lease_expires_at <= %s AND c.assigned_to_id IS NULL"
# Whether the user may have a live claim or an assigned item in the queue, which come before the
# pending tier: a superset of both, reading a few index entries (`claimed_by` is cleared whenever
# an item leaves the claimed state).
_MINE_IN_QUEUE = (
    f"EXISTS (SELECT 1 FROM {_ITEMS} m WHERE m.queue_id = %s AND m.status IN ('pending', 'claimed')"
    " AND (m.claimed_by_id = %s OR m.assigned_to_id = %s))"
)
# A pending item is never held: its state before a claim (invariant of every write that sets
# status pending: ingest, release, requeue after a review, the lease sweeper).
_PENDING_STATE = {"status": ItemStatus.PENDING.value, "claimed_by": None, "lease_expires_at": None}


def _candidate_sql(
    columns: str, tier: str, tier_params: list[Any], *, queue: Queue, user: User, exclude: Collection[int]
) -> tuple[str, list[Any]]:
    """SELECT `columns` of the first row `c` of `queue` in claim order (blocking first, then
    priority, then oldest) that matches `tier`, that `user` has not reviewed and that is not in
    `exclude`; locked with FOR UPDATE SKIP LOCKED on PostgreSQL, so concurrent claims neither wait
    on each other nor take the same row (SQLite serialises writers)."""
    sql = (
        f"SELECT {columns} FROM {_ITEMS} c WHERE c.queue_id = %s AND {tier}"
        f" AND NOT EXISTS (SELECT 1 FROM {_REVIEWS} r WHERE r.item_id = c.id AND r.reviewer_id = %s)"
    )
    params = [queue.pk, *tier_params, user.pk]
    if exclude:
        sql += f" AND c.id NOT IN ({', '.join(['%s'] * len(exclude))})"
        params += [int(pk) for pk in exclude]
    sql += " ORDER BY c.blocking DESC, c.priority DESC, c.id LIMIT 1"
    if connection.features.has_select_for_update_skip_locked:
        sql += " FOR UPDATE SKIP LOCKED"
    return sql, params


def _fetch_item(sql: str, params: list[Any], columns: rows.Columns) -> ReviewItem | None:
    """Run `sql` (selecting or returning `columns` of one item row) and load the row, if any."""
    found = rows.fetch_one(sql, params, columns)
    return found[0] if found is not None else None


def _claim_returning(
    sql: str,
    params: list[Any],
    *,
    relax: bool = False,
    event: AuditEvent | None = None,
    joined: rows.Joined | None = None,
) -> ReviewItem | None:
    """Run an UPDATE of one item row and return the row as a model instance (types converted).
    With `relax` (PostgreSQL), a claimed row also relaxes the commit of this transaction, in the
    same statement (see `_commit_without_waiting_for_disk`). With `event` (PostgreSQL), a claimed
    row's audit event is written by the same statement too (a data-modifying CTE), its object the
    claimed row; and `joined`, read for the claimed row (`written`) by the same statement, comes
    back as the item's `joined_rows`."""
    returning = _CLAIMED.sql + (f", {_RELAX_COMMIT}" if relax else "")
    if event is None:
        return _fetch_item(f"{sql} RETURNING {returning}", params, _CLAIMED)
    log = rows.insert_select_statement(event, "written", {"object_id": "CAST(written.id AS text)"})
    select, join, all_params = "written.*, (SELECT id FROM logged)", "", [*params, *log.params]
    if joined is not None:
        select, join = f"{select}, j.*", f" LEFT JOIN LATERAL ({joined.sql}) j ON true"
        all_params += joined.params
    with rows.cursor() as cursor:
        cursor.execute(
            f"WITH written AS ({sql} RETURNING {returning}), logged AS ({log.sql}) SELECT {select} FROM written{join}",
            all_params,
        )
        found = cursor.fetchall()
    if not found:
        return None
    (item,), extra = rows.load_row(found[0], _CLAIMED)
    returned = 2 if relax else 1  # set_config's value, if any, then the event's id
    event.object_id = str(item.pk)
    log.returned([(extra[returned - 1],)])  # type: ignore[misc]
    if joined is not None:
        start = len(_CLAIMED.fields) + returned
        item.joined_rows = [tuple(row[start:]) for row in found]  # type: ignore[attr-defined]
    return item


def _claim_pending(
    *,
    queue: Queue,
    user: User,
    exclude: Collection[int],
    now: Any,
    until: Any,
    first: bool,
    relax: bool = False,
    event: AuditEvent | None = None,
    joined: rows.Joined | None = None,
) -> ReviewItem | None:
    """The pending tier in one statement (`now`, `until`: database-adapted times). With `first`,
    only when the user has neither a live claim nor an assigned item in the queue
    (`_MINE_IN_QUEUE`): those tiers must be asked first. `relax`, `event`, `joined`: as for
    `_claim_returning`."""
    candidate, params = _candidate_sql("c.id", _TIER_PENDING, [], queue=queue, user=user, exclude=exclude)
    sql = f"UPDATE {_ITEMS} SET {_CLAIM_SET} WHERE id = ({candidate})"
    params = [user.pk, now, until, *params]
    if first:
        sql += f" AND NOT {_MINE_IN_QUEUE}"
        params += [queue.pk, user.pk, user.pk]
    return _claim_returning(sql, params, relax=relax, event=event, joined=joined)


def _claim_tier(
    tier: str,
    tier_params: list[Any],
    *,
    queue: Queue,
    user: User,
    exclude: Collection[int],
    now: Any,
    until: Any,
) -> tuple[ReviewItem | None, dict[str, Any] | None]:
    """A tier whose rows may hold an expired lease: read the row's state (for the audit event)
    while locking it, then claim it. Returns the item and its state before."""
    candidate, params = _candidate_sql(_CANDIDATE.sql, tier, tier_params, queue=queue, user=user, exclude=exclude)
    old = _fetch_item(candidate, params, _CANDIDATE)
    if old is None:
        return None, None
    item = _claim_returning(f"UPDATE {_ITEMS} SET {_CLAIM_SET} WHERE id = %s", [user.pk, now, until, old.pk])
    return item, _item_state(old)


# `SET LOCAL synchronous_commit = off` as an expression: evaluated in the claim's RETURNING list,
# so only when a row was claimed, and without a statement of its own.
_RELAX_COMMIT = "set_config('synchronous_commit', 'off', true)"


def _commit_without_waiting_for_disk() -> None:
    """PostgreSQL: this transaction's COMMIT does not wait for its WAL to reach the disk
    (`SET LOCAL synchronous_commit = off`; ~1-4 ms saved per claim). A claim is a lease: should
    the database crash within the WAL writer's delay (a fraction of a second), the claim and its
    audit event are lost together and the item is simply pending again. Commits are never
    reordered: any later durable commit (a review of the item, for one) flushes the claim first.
    Only for a transaction the claim owns (not inside a caller's), so nothing else is affected.
    The common claim does the same in its UPDATE (`_RELAX_COMMIT`) and needs no call."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {_RELAX_COMMIT}")


def claim_next_item(
    *, queue: Queue, user: User, exclude: Collection[int] = (), joined: rows.Joined | None = None
) -> ReviewItem | None:
    """Give `user` the next item of `queue` to review, or None when nothing is left for them.

    Resumes the user's live claim in this queue first. Otherwise, in this order: items assigned
    to the user; pending items, blocking ones first (an agent is waiting on them), then by
    priority (desc) then age (id asc) — the query walks the partial
    index `item_claim_order` and stops at the first claimable row, so its cost does not grow with
    the queue's depth; then items whose lease ran out before the sweeper got to them. Items the
    user has already reviewed and items assigned to someone else are never offered; nor are the
    item ids in `exclude` (the ones the reviewer skipped in the UI).

    The common case (no live claim, nothing assigned to the user, a pending item left) is one
    UPDATE … RETURNING and the audit event's insert (on PostgreSQL both in one statement, which
    is its own transaction when the claim owns it), whose commit does not wait for the disk when
    the claim owns it (`_commit_without_waiting_for_disk`). There, `joined` (a query about the
    claimed row, `written`: see `rows.Joined`) is answered by that statement too, as the item's
    `joined_rows`; an item claimed otherwise has no `joined_rows`."""
    if not can_review(user=user, queue=queue):
        raise NotAMember(f"You are not a reviewer of queue '{queue.slug}'.")
    now = timezone.now()
    until = now + timedelta(seconds=queue.lease_seconds)
    adapt = connection.ops.adapt_datetimefield_value  # as the ORM stores them (SQLite: naive UTC text)
    tier = {"queue": queue, "user": user, "exclude": exclude, "now": adapt(now), "until": adapt(until)}
    # Only when the claim owns its transaction, and only when it writes something.
    relax = not connection.in_atomic_block and connection.vendor == "postgresql"
    # PostgreSQL: the common claim writes its audit event in the claiming statement.
    event = None
    if connection.vendor == "postgresql":
        after = _item_state(ReviewItem(status=ItemStatus.CLAIMED, claimed_by_id=user.pk, lease_expires_at=until))
        event = audit.audit_event(
            "item.claimed", object_type=_ITEM_TYPE, actor=user, before=_PENDING_STATE, after=after
        )
    # PostgreSQL, the claim owning its transaction: the common claim is that one statement, run
    # on its own (its own transaction: no BEGIN and COMMIT round trips). Finding no row, it
    # changed nothing, and the other tiers are asked in a transaction.
    alone = relax and event is not None
    if alone:
        item = _claim_pending(**tier, first=True, relax=True, event=event, joined=joined)
        if item is not None:
            item.queue, item.claimed_by = queue, user
            return item
    with transaction.atomic():
        item = None if alone else _claim_pending(**tier, first=True, relax=relax, event=event)
        if item is not None and event is not None:
            item.queue, item.claimed_by = queue, user
            return item
        before = _PENDING_STATE
        if item is None:
            live = (
                ReviewItem.objects.filter(
                    queue=queue, status=ItemStatus.CLAIMED, claimed_by=user, lease_expires_at__gt=now
                )
                .order_by("id")
                .first()
            )
            if live is not None:
                live.queue, live.claimed_by = queue, user
                return live
            item, before = _claim_tier(_TIER_ASSIGNED, [user.pk, tier["now"]], **tier)
            if item is None:
                item, before = _claim_pending(**tier, first=False), _PENDING_STATE
            if item is None:
                item, before = _claim_tier(_TIER_EXPIRED, [tier["now"]], **tier)
            if item is None:
                return None
            if relax:  # any time before the COMMIT
                _commit_without_waiting_for_disk()
        audit.record("item.claimed", item, actor=user, before=before, after=_item_state(item))
    item.queue = queue
    item.claimed_by = user
    return item


def _item_state(item: ReviewItem) -> dict[str, Any]:
    return {
        "status": item.status,
        "claimed_by": item.claimed_by_id,
        "lease_expires_at": item.lease_expires_at.isoformat() if item.lease_expires_at else None,
    }


_LOCK_ITEM = rows.Columns(ReviewItem, "i")
_LOCK_QUEUE = rows.Columns(Queue, "q")
_LOCK_STEP = rows.Columns(Step, "s", skip=("input",))  # often a long conversation; loaded if read


def _lock_item(item_id: int, *, reviewer: User | None = None) -> ReviewItem:
    """The item with its queue and step (the step's input loads on access), the item row locked
    (waiting for the lock: these are operations on one known item). One hand-written query (see
    `rows`): it runs on every verdict.

    With `reviewer`, the same query checks that they may act on the item as a reviewer (a member
    of its queue, or staff): ItemNotFound otherwise, as for a missing item (no leak)."""
    try:
        params: list[Any] = [int(item_id)]
    except (ValueError, TypeError):
        raise ItemNotFound(f"No item {item_id}.") from None
    member = "NULL"
    if reviewer is not None:
        member, params = membership_sql("i.queue_id"), [reviewer.pk, reviewer.pk, *params]
    sql = (
        f"SELECT {_LOCK_ITEM.sql}, {_LOCK_QUEUE.sql}, {_LOCK_STEP.sql}, {member}"
        f" FROM {_ITEMS} i JOIN {Queue._meta.db_table} q ON q.id = i.queue_id"
        f" JOIN {Step._meta.db_table} s ON s.id = i.step_id WHERE i.id = %s"
    )
    if connection.features.has_select_for_update_of:
        sql += " FOR UPDATE OF i"
    elif connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    with rows.cursor() as cursor:
        with rows.pipelined():  # in a transaction's start, with its BEGIN: one round trip
            cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise ItemNotFound(f"No item {item_id}.")
    (item, queue, step), (is_member,) = rows.load_row(row, _LOCK_ITEM, _LOCK_QUEUE, _LOCK_STEP)
    item.queue, item.step = queue, step
    if reviewer is not None:
        if is_member and reviewer.is_active:
            note_membership_checked(queue, reviewer)
        elif not getattr(reviewer, "is_staff", False):
            raise ItemNotFound(f"No item {item_id}.")
    return item


def _lease_problem(item: ReviewItem, user: User, now: datetime) -> str | None:
    """Why `user` may not act on `item` as its holder, or None when they hold a live lease."""
    if item.status == ItemStatus.CLAIMED and item.claimed_by_id == user.pk:
        if item.lease_expires_at is not None and item.lease_expires_at <= now:
            return (
                f"Your lease on item {item.pk} expired at {item.lease_expires_at.isoformat()}; "
                "the item went back to the queue."
            )
        return None
    if item.status == ItemStatus.CLAIMED and item.lease_expires_at is not None and item.lease_expires_at > now:
        return f"Item {item.pk} is held by another reviewer."
    if item.status == ItemStatus.CLAIMED:  # someone else's lease ran out: the item is claimable again
        return f"You do not hold a claim on item {item.pk}; claim it first."
    if item.status == ItemStatus.PENDING:
        last = (
            AuditEvent.objects.filter(
                object_type="reviewitem",
                object_id=str(item.pk),
                action__in=["item.lease_expired", "item.released"],
            )
            .order_by("-id")
            .first()
        )
        if (
            last is not None
            and last.action == "item.lease_expired"
            and (last.before or {}).get("claimed_by") == user.pk
        ):
            expired_at = (last.before or {}).get("lease_expires_at") or "its expiry"
            return f"Your lease on item {item.pk} expired at {expired_at}; the item went back to the queue."
        if last is not None and last.action == "item.released":
            return f"Item {item.pk} was released; it went back to the queue."
        return f"You do not hold a claim on item {item.pk}; claim it first."
    return f"Item {item.pk} is no longer open (it is {item.status})."


# --- reviewing ------------------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _json_equal(a: Any, b: Any) -> bool:
    return _canonical(a) == _canonical(b)


def _validate_verdict(
    verdict: Any, output: Any, reason: Any, original: Any, *, allowed: tuple[str, ...]
) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if verdict not in allowed:
        errors["verdict"] = [f"must be one of: {', '.join(allowed)}"]
        return errors
    if verdict == Verdict.CORRECT:
        if output is None:
            errors["output"] = ["required for a correction"]
        elif _json_equal(output, original):
            errors["output"] = ["the correction is the same as the original output"]
    if not isinstance(reason, str):
        errors["reason"] = ["must be a string"]
    elif verdict == Verdict.REJECT and not reason.strip():
        errors["reason"] = ["required for reject"]
    return errors


RUBRIC_TYPES = ("choice", "multi_choice", "rating", "text")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_rubric(rubric: Any) -> list[dict[str, Any]]:
    """The rubric (a copy, as given) when valid, or QueueError naming the entry and key.
    Defaults: required false; rating min 1, max 5."""
    if rubric is None:
        return []
    if not isinstance(rubric, list):
        raise QueueError(errors={"rubric": ["must be a list of labels"]})
    errors: list[str] = []
    names: set[str] = set()
    cleaned: list[dict[str, Any]] = []
    for index, entry in enumerate(rubric):
        where = f"[{index}]"
        if not isinstance(entry, dict):
            errors.append(f"{where}: must be an object with name and type")
            continue
        unknown = sorted(set(entry) - {"name", "type", "options", "min", "max", "required", "help"})
        if unknown:
            errors.append(f"{where}: unknown key '{unknown[0]}'")
        name, kind = entry.get("name"), entry.get("type")
        if not isinstance(name, str) or not name.strip():
            errors.append(f"{where}.name: required")
            continue
        if name in names:
            errors.append(f"{where}.name: '{name}' appears twice")
        names.add(name)
        if kind not in RUBRIC_TYPES:
            errors.append(f"{where}.type: must be one of: {', '.join(RUBRIC_TYPES)}")
            continue
        if not isinstance(entry.get("required", False), bool):
            errors.append(f"{where}.required: must be true or false")
        if "help" in entry and not isinstance(entry["help"], str):
            errors.append(f"{where}.help: must be text")
        if kind in ("choice", "multi_choice"):
            options = entry.get("options")
            if (
                not isinstance(options, list)
                or not options
                or not all(isinstance(o, str) and o for o in options)
                or len(set(options)) != len(options)
            ):
                errors.append(f"{where}.options: a non-empty list of distinct strings is required for {kind}")
        elif "options" in entry:
            errors.append(f"{where}.options: only for choice and multi_choice")
        if kind == "rating":
            low, high = entry.get("min", 1), entry.get("max", 5)
            if not _is_number(low) or not _is_number(high) or low >= high:
                errors.append(f"{where}.min/max: numbers with min < max")
        elif "min" in entry or "max" in entry:
            errors.append(f"{where}.min/max: only for rating")
        item = dict(entry)  # stored as given (defaults apply when reading), so re-applying is a no-op
        cleaned.append(item)
    if errors:
        raise QueueError(errors={"rubric": errors})
    return cleaned


def validate_labels(rubric: list[dict[str, Any]], labels: Any) -> dict[str, Any]:
    """Check a reviewer's labels against the queue rubric; ReviewError names the label."""
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        raise ReviewError(errors={"labels": ["must be an object mapping label names to values"]})
    by_name = {entry["name"]: entry for entry in rubric or []}
    problems: dict[str, list[str]] = {}
    for name in labels:
        if name not in by_name:
            problems[str(name)] = ["unknown label" + (f"; expected one of: {', '.join(by_name)}" if by_name else "")]
    cleaned: dict[str, Any] = {}
    for name, entry in by_name.items():
        value = labels.get(name)
        if value is None or value == "" or value == []:
            if entry.get("required"):
                problems[name] = ["required"]
            continue
        kind = entry["type"]
        if kind == "choice" and value not in entry.get("options", []):
            problems[name] = [f"must be one of: {', '.join(entry.get('options', []))}"]
        elif kind == "multi_choice" and (
            not isinstance(value, list) or not all(v in entry.get("options", []) for v in value)
        ):
            problems[name] = [f"must be a list of: {', '.join(entry.get('options', []))}"]
        elif kind == "rating" and (not _is_number(value) or not entry.get("min", 1) <= value <= entry.get("max", 5)):
            problems[name] = [f"must be a number from {entry.get('min', 1)} to {entry.get('max', 5)}"]
        elif kind == "text" and not isinstance(value, str):
            problems[name] = ["must be text"]
        else:
            cleaned[name] = value
    if problems:
        raise ReviewError(errors={"labels": problems})
    return cleaned


def submit_review(
    *,
    item_id: int,
    user: User,
    verdict: str,
    output: Any = None,
    reason: str = "",
    labels: dict | None = None,
    comment: str = "",
    seconds_spent: float | None = None,
) -> Review:
    """Record `user`'s verdict on the item they hold, then resolve the item if it has the reviews it
    needs (or escalate it). LeaseLost (409) when they do not hold a live lease; ReviewError (400)
    naming the field for bad input; ItemNotFound (404) when the item does not exist or `user` is
    neither a member of its queue nor staff (checked in the locking query). All or nothing."""
    now = timezone.now()
    try:
        with transaction.atomic():
            item = _lock_item(item_id, reviewer=user)
            problem = _lease_problem(item, user, now)
            if problem:
                raise LeaseLost(problem)
            queue = item.queue
            errors = _validate_verdict(verdict, output, reason, item.step.output, allowed=tuple(Verdict.values))
            if not isinstance(comment, str):
                errors["comment"] = ["must be a string"]
            if seconds_spent is not None and (not _is_number(seconds_spent) or seconds_spent < 0):
                errors["seconds_spent"] = ["must be a number of seconds, 0 or more"]
            if errors:
                raise ReviewError(errors=errors)
            clean_labels = validate_labels(queue.rubric, labels)
            review = Review(
                item=item,
                reviewer=user,
                verdict=verdict,
                output=output if verdict == Verdict.CORRECT else None,
                reason=reason.strip(),
                labels=clean_labels,
                comment=comment,
                seconds_spent=seconds_spent,
                created_at=now,
            )
            item.reviews_count += 1
            after = {"item": item.pk, "verdict": verdict, "reviews_count": item.reviews_count}
            if rows.batches():  # saved with the item's other writes, in one round trip
                submitted = audit.audit_event("review.submitted", object_type="review", actor=user, after=after)
                saving, events = [audit.insert_logged_statement(review, submitted)], []
            else:
                rows.insert([review])
                saving, events = [], [audit.audit_event("review.submitted", review, actor=user, after=after)]
            _after_review(item, review, user, now, saving=saving, preceding=events)
    except IntegrityError as exc:
        if "review_one_per_reviewer_per_item" in str(exc):
            raise Conflict(f"You have already reviewed item {item_id}.") from None
        raise Conflict(f"Item {item_id} changed while your review was being saved; try again.") from None
    return review


def _after_review(
    item: ReviewItem,
    review: Review,
    user: User,
    now: datetime,
    *,
    saving: list[rows.Statement],
    preceding: list[AuditEvent],
) -> None:
    """Resolve, escalate or requeue the item after `review`. `saving` (writes not yet run: where
    `rows.batches()`, the review and its audit event) and `preceding` (unsaved audit events: the
    review's, elsewhere) go with the decision's writes when the item resolves, else first."""
    queue = item.queue
    complete = review.verdict != Verdict.ESCALATE and item.reviews_count >= queue.reviews_required
    if item.reviews_count == 1:
        reviews = [review]
    elif complete:  # the earlier reviews, then this one (saved or not yet: the newest either way)
        reviews = [*item.reviews.exclude(pk=review.pk).order_by("id"), review]
    else:
        reviews = []
    agree = len({r.verdict for r in reviews}) == 1 and (
        review.verdict != Verdict.CORRECT or len({_canonical(r.output) for r in reviews}) == 1
    )
    if complete and agree:
        method = DecisionMethod.SINGLE if len(reviews) == 1 else DecisionMethod.AGREEMENT
        _resolve_with(
            item, review, method=method, actor=user, now=now, reviews=reviews, saving=saving, preceding=preceding
        )
        return
    rows.run(*saving, *audit.statements(preceding))
    if review.verdict == Verdict.ESCALATE:
        _escalate(item, actor=user, now=now, reason=review.reason or "escalated by a reviewer")
        return
    if item.reviews_count < queue.reviews_required:
        item.status = ItemStatus.PENDING
        item.claimed_by = None
        item.claimed_at = None
        item.lease_expires_at = None
        rows.update(item, ["status", "claimed_by", "claimed_at", "lease_expires_at", "reviews_count"])
        return
    summary = ", ".join(f"{r.verdict}" for r in reviews)
    _escalate(item, actor=user, now=now, reason=f"reviewers disagreed ({summary})")


STEP_STATUS_FOR = {
    Verdict.APPROVE: StepStatus.APPROVED,
    Verdict.CORRECT: StepStatus.CORRECTED,
    Verdict.REJECT: StepStatus.REJECTED,
}


def _resolve_with(
    item: ReviewItem,
    review: Review,
    *,
    method: str,
    actor: User,
    now: datetime,
    reviews: list[Review] | None = None,
    saving: Sequence[rows.Statement] = (),
    preceding: Sequence[AuditEvent] = (),
) -> Decision:
    reasons = [r.reason for r in (reviews or [review]) if r.reason]
    reason = "; ".join(dict.fromkeys(reasons))
    return _decide(
        item,
        verdict=review.verdict,
        output=review.output,
        reason=reason,
        reviewer=review.reviewer,
        method=method,
        actor=actor,
        now=now,
        saving=saving,
        preceding=preceding,
    )


def _decide(
    item: ReviewItem,
    *,
    verdict: str,
    output: Any,
    reason: str,
    reviewer: User | None,
    method: str,
    actor: User | None,
    now: datetime,
    saving: Sequence[rows.Statement] = (),
    preceding: Sequence[AuditEvent] = (),
) -> Decision:
    """Resolve the item and decide its step. `verdict` is approve | correct | reject. `saving`
    (writes) and `preceding` (audit events) go first in the decision's writes (`_after_review`)."""
    step = item.step
    status = STEP_STATUS_FOR[Verdict(verdict)]
    final_output = step.output if verdict == Verdict.APPROVE else (output if verdict == Verdict.CORRECT else None)
    decision = Decision(
        step=step,
        item=item,
        verdict=status,
        output=final_output,
        reason=reason,
        reviewer=reviewer,
        method=method,
        decided_at=now,
    )
    if item.escalated_from_id is not None or method in (DecisionMethod.ADJUDICATED, DecisionMethod.TIMEOUT):
        # The step's other items (the escalated original, or its copy in the escalation queue) are moot.
        ReviewItem.objects.filter(step_id=step.pk, status__in=[*OPEN_ITEM_STATUSES, ItemStatus.ESCALATED]).exclude(
            pk=item.pk
        ).update(status=ItemStatus.RESOLVED, resolved_at=now, claimed_by=None, lease_expires_at=None)
    step.status, step.updated_at = status, now
    before = _item_state(item)
    item.status = ItemStatus.RESOLVED
    item.resolved_at = now
    item.claimed_by = None
    item.lease_expires_at = None
    events = [
        *preceding,
        audit.audit_event(
            "item.resolved", item, actor=actor, before=before, after={"status": item.status, "method": method}
        ),
        audit.audit_event(
            "step.decided",
            step,
            actor=actor,
            after={"status": status, "method": method, "reviewer": reviewer.pk if reviewer else None},
        ),
    ]
    # What other apps write with a decision (the wake-up of waiting agents, webhook events).
    theirs = _statements(signals.step_deciding, sender=Decision, step_id=step.pk)
    # The decision's writes in one round trip on PostgreSQL (none reads another's result).
    rows.run(
        *saving,
        rows.insert_statement([decision]),
        rows.update_statement(step, ["status", "updated_at"]),
        rows.update_statement(item, ["status", "resolved_at", "claimed_by", "lease_expires_at", "reviews_count"]),
        *audit.statements(events),
        *theirs,
    )
    transaction.on_commit(lambda: signals.step_decided.send(sender=Decision, step_id=step.pk, decision_id=decision.pk))
    return decision


def _statements(signal: Signal, **kwargs: Any) -> list[rows.Statement]:
    """Send a signal that is sent inside a transaction (review/signals.py): the statements its
    receivers return, to run in that transaction."""
    return [statement for _, found in signal.send(**kwargs) for statement in found or ()]


def _escalate(item: ReviewItem, *, actor: User | None, now: datetime, reason: str) -> ReviewItem | None:
    """Mark the item escalated; copy it into the queue's escalation queue when it has one, otherwise
    it waits for staff to `adjudicate` it. Returns the copy, if any."""
    queue = item.queue
    target = queue.escalation_queue
    copy = None
    if target is not None and target.pk != queue.pk:
        due_at = item.due_at
        if due_at is None or due_at <= now:
            due_at = now + timedelta(seconds=target.sla_seconds) if target.sla_seconds else item.due_at
        copy = ReviewItem.objects.create(
            queue=target,
            step_id=item.step_id,
            priority=item.priority,
            blocking=item.blocking,
            due_at=due_at,
            escalated_from=item,
            created_at=now,
        )
    before = _item_state(item)
    item.status = ItemStatus.ESCALATED
    item.claimed_by = None
    item.lease_expires_at = None
    rows.update(item, ["status", "claimed_by", "lease_expires_at", "reviews_count"])
    audit.record(
        "item.escalated",
        item,
        actor=actor,
        before=before,
        after={
            "status": item.status,
            "reason": reason,
            "escalated_to": copy.pk if copy else None,
            "queue": target.slug if copy else None,
        },
    )
    escalation = {"item_id": item.pk, "step_id": item.step_id, "escalated_to_id": copy.pk if copy else None}
    rows.run(*_statements(signals.item_escalating, sender=ReviewItem, **escalation))
    transaction.on_commit(lambda: signals.item_escalated.send(sender=ReviewItem, **escalation))
    return copy


# --- holding an item ----------------------------------------------------------------------------------


def release_item(*, item_id: int, user: User) -> ReviewItem:
    """Give a claimed item back to the queue (only its holder may)."""
    with transaction.atomic():
        item = _lock_item(item_id)
        if item.status != ItemStatus.CLAIMED or item.claimed_by_id != user.pk:
            raise LeaseLost(_lease_problem(item, user, timezone.now()) or f"You do not hold item {item.pk}.")
        before = _item_state(item)
        item.status = ItemStatus.PENDING
        item.claimed_by = None
        item.claimed_at = None
        item.lease_expires_at = None
        rows.update(item, ["status", "claimed_by", "claimed_at", "lease_expires_at"])
        audit.record("item.released", item, actor=user, before=before, after=_item_state(item))
    return item


def heartbeat(*, item_id: int, user: User) -> ReviewItem:
    """Extend the holder's live lease by the queue's lease length (the UI's keep-alive)."""
    now = timezone.now()
    with transaction.atomic():
        item = _lock_item(item_id)
        problem = _lease_problem(item, user, now)
        if problem:
            raise LeaseLost(problem)
        item.lease_expires_at = now + timedelta(seconds=item.queue.lease_seconds)
        rows.update(item, ["lease_expires_at"])
    return item


def assign_item(*, item: ReviewItem, assignee: User | None, actor: User) -> ReviewItem:
    """Staff: reserve an open item for one reviewer (offered to them first, to no one else) or,
    with `assignee=None`, lift the reservation. A claim someone else holds right now is left alone."""
    _require_staff(actor)
    with transaction.atomic():
        locked = _lock_item(item.pk)
        if locked.status not in OPEN_ITEM_STATUSES:
            raise Conflict(f"Item {locked.pk} is no longer open (it is {locked.status}).")
        if assignee is not None:
            if not can_review(user=assignee, queue=locked.queue):
                raise ReviewError(
                    errors={"username": [f"{assignee.get_username()} is not a reviewer of queue '{locked.queue.slug}'"]}
                )
            if Review.objects.filter(item=locked, reviewer=assignee).exists():
                raise ReviewError(errors={"username": [f"{assignee.get_username()} has already reviewed this item"]})
        before = {"assigned_to": locked.assigned_to.get_username() if locked.assigned_to else None}
        locked.assigned_to = assignee
        locked.save(update_fields=["assigned_to"])
        audit.record(
            "item.assigned",
            locked,
            actor=actor,
            before=before,
            after={"assigned_to": assignee.get_username() if assignee else None},
        )
    return locked


ADJUDICATION_VERDICTS = (Verdict.APPROVE.value, Verdict.CORRECT.value, Verdict.REJECT.value)


def adjudicate(*, item: ReviewItem, actor: User, verdict: str, output: Any = None, reason: str = "") -> Decision:
    """Staff: decide an escalated item (method `adjudicated`)."""
    _require_staff(actor)
    now = timezone.now()
    with transaction.atomic():
        locked = _lock_item(item.pk)
        if locked.status != ItemStatus.ESCALATED:
            raise Conflict(f"Item {locked.pk} is not waiting for adjudication (it is {locked.status}).")
        if Decision.objects.filter(step_id=locked.step_id).exists():
            raise Conflict(f"The step of item {locked.pk} is already decided.")
        errors = _validate_verdict(verdict, output, reason, locked.step.output, allowed=ADJUDICATION_VERDICTS)
        if errors:
            raise ReviewError(errors=errors)
        return _decide(
            locked,
            verdict=verdict,
            output=output,
            reason=reason.strip(),
            reviewer=actor,
            method=DecisionMethod.ADJUDICATED,
            actor=actor,
            now=now,
        )


# --- background: leases and SLAs ----------------------------------------------------------------------


def sweep_expired_leases(now: datetime | None = None) -> int:
    """Put items whose lease ran out back to pending; returns how many."""
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(
            ReviewItem.objects.select_for_update(skip_locked=True)
            .filter(status=ItemStatus.CLAIMED, lease_expires_at__lte=now)
            .values_list("pk", "claimed_by_id", "lease_expires_at")
        )
        if not rows:
            return 0
        ReviewItem.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
            status=ItemStatus.PENDING, claimed_by=None, claimed_at=None, lease_expires_at=None
        )
        audit.record_many(
            [
                audit.audit_event(
                    "item.lease_expired",
                    object_type="reviewitem",
                    object_id=pk,
                    before={
                        "status": ItemStatus.CLAIMED,
                        "claimed_by": claimed_by,
                        "lease_expires_at": expires.isoformat(),
                    },
                    after={"status": ItemStatus.PENDING, "claimed_by": None, "lease_expires_at": None},
                )
                for pk, claimed_by, expires in rows
            ]
        )
    return len(rows)


def apply_timeouts(now: datetime | None = None) -> int:
    """Open items past their due time, in queues with a timeout action: auto-approve, reject
    ("SLA expired") or escalate them. Returns how many items were acted on."""
    now = now or timezone.now()
    with transaction.atomic():
        items = list(
            _lock(
                ReviewItem.objects.filter(status__in=OPEN_ITEM_STATUSES, due_at__lte=now)
                .exclude(queue__timeout_action=TimeoutAction.NONE)
                .select_related("queue", "queue__escalation_queue", "step")
                .order_by("id")
            )
        )
        for item in items:
            action = item.queue.timeout_action
            if action == TimeoutAction.ESCALATE:
                _escalate(item, actor=None, now=now, reason="SLA expired")
                continue
            approve = action == TimeoutAction.AUTO_APPROVE
            _decide(
                item,
                verdict=Verdict.APPROVE if approve else Verdict.REJECT,
                output=None,
                reason="" if approve else "SLA expired",
                reviewer=None,
                method=DecisionMethod.TIMEOUT,
                actor=None,
                now=now,
            )
    return len(items)


# --- amending a decision ------------------------------------------------------------------------------

AMEND_VERDICTS = (Verdict.APPROVE.value, Verdict.CORRECT.value, Verdict.REJECT.value)


def amendment_problem(review: Review, decision: Decision | None) -> str | None:
    """Why `review` cannot be amended (one readable sentence), or None when it can.

    `decision` is the decision of the review's step, if there is one. A review can be amended
    while its item waits for more reviews, and after a single-review or agreed decision until
    that decision has been exported in a dataset version. Escalations, adjudicated and timed-out
    decisions belong to someone else."""
    if review.verdict == Verdict.ESCALATE:
        return "You escalated this item; escalations are settled by the next reviewer or staff."
    if decision is None:
        if review.item.status in OPEN_ITEM_STATUSES:
            return None
        return f"Item {review.item_id} is {review.item.status}; there is no decision of yours to amend."
    if decision.item_id != review.item_id or decision.method not in (DecisionMethod.SINGLE, DecisionMethod.AGREEMENT):
        return f"This step was decided by {decision.method}, not by your review."
    if decision.exported_at is not None:
        return (
            "This decision has been exported in a dataset version "
            f"({decision.exported_at:%Y-%m-%d %H:%M}); it can no longer be amended."
        )
    return None


def _review_state(review: Review) -> dict[str, Any]:
    return {
        "verdict": review.verdict,
        "output": review.output,
        "reason": review.reason,
        "labels": review.labels,
        "comment": review.comment,
    }


def _decision_state(decision: Decision) -> dict[str, Any]:
    return {
        "verdict": decision.verdict,
        "output": decision.output,
        "reason": decision.reason,
        "reviewer": decision.reviewer_id,
        "method": decision.method,
    }


def amend_review(
    *,
    review_id: int,
    user: User,
    verdict: str,
    output: Any = None,
    reason: str = "",
    labels: dict | None = None,
    comment: str = "",
) -> Review:
    """Change `user`'s own review and, when it decided its step, re-resolve the decision from the
    reviews as they now stand (the same rules as `submit_review`): a single review's decision
    follows it; an agreed decision follows it only while all reviews still agree (otherwise the
    amendment is refused: staff settle disagreements). Refused (Conflict, 409) once the decision
    is in a dataset version (`Decision.exported_at`). Audited: `review.amended` and, when the
    decision changes, `decision.amended`, each with before/after. All or nothing."""
    now = timezone.now()
    with transaction.atomic():
        item_id = Review.objects.filter(pk=review_id, reviewer=user).values_list("item_id", flat=True).first()
        if item_id is None:
            raise ItemNotFound(f"No review {review_id} of yours.")
        item = _lock_item(item_id)  # the item row serialises amendments with new reviews (same lock order)
        review = Review.objects.select_for_update().get(pk=review_id)
        review.item = item
        decision = Decision.objects.select_for_update().filter(step_id=item.step_id).first()
        problem = amendment_problem(review, decision)
        if problem:
            raise Conflict(problem)
        step = item.step
        errors = _validate_verdict(verdict, output, reason, step.output, allowed=AMEND_VERDICTS)
        if not isinstance(comment, str):
            errors["comment"] = ["must be a string"]
        if errors:
            raise ReviewError(errors=errors)
        clean_labels = validate_labels(item.queue.rubric, labels)
        before = _review_state(review)
        review.verdict = verdict
        review.output = output if verdict == Verdict.CORRECT else None
        review.reason = reason.strip()
        review.labels = clean_labels
        review.comment = comment
        after = _review_state(review)
        if after == before:
            return review
        review.amended_at = now
        review.save(update_fields=["verdict", "output", "reason", "labels", "comment", "amended_at"])
        audit.record("review.amended", review, actor=user, before=before, after=after)
        if decision is not None:
            _redecide(decision, item=item, review=review, actor=user, now=now)
    return review


def _redecide(decision: Decision, *, item: ReviewItem, review: Review, actor: User, now: datetime) -> None:
    reviews = [review] if decision.method == DecisionMethod.SINGLE else list(item.reviews.order_by("id"))
    verdicts = {r.verdict for r in reviews}
    agree = len(verdicts) == 1 and (
        review.verdict != Verdict.CORRECT or len({_canonical(r.output) for r in reviews}) == 1
    )
    if not agree:
        others = ", ".join(r.verdict for r in reviews if r.pk != review.pk)
        raise Conflict(
            f"The other reviewers of this item decided: {others}. Your amended verdict would disagree "
            "with them; ask staff to adjudicate instead."
        )
    step = item.step
    before = _decision_state(decision)
    status = STEP_STATUS_FOR[Verdict(review.verdict)]
    decision.verdict = status
    decision.output = step.output if review.verdict == Verdict.APPROVE else review.output
    reasons = [r.reason for r in reviews if r.reason]
    decision.reason = "; ".join(dict.fromkeys(reasons))
    decision.reviewer = review.reviewer
    decision.decided_at = now
    decision.save(update_fields=["verdict", "output", "reason", "reviewer", "decided_at"])
    Step.objects.filter(pk=step.pk).update(status=status, updated_at=now)
    step.status = status
    audit.record("decision.amended", decision, actor=actor, before=before, after=_decision_state(decision))
    rows.run(*_statements(signals.step_deciding, sender=Decision, step_id=step.pk))
    transaction.on_commit(lambda: signals.step_decided.send(sender=Decision, step_id=step.pk, decision_id=decision.pk))


def skip_item(*, item_id: int, user: User, exclude: Collection[int] = ()) -> ReviewItem | None:
    """Give the held item back (`release_item`) and claim the next one, never the skipped item
    nor the ids in `exclude` (those skipped earlier). None when nothing else is left."""
    with transaction.atomic():
        item = release_item(item_id=item_id, user=user)
        return claim_next_item(queue=item.queue, user=user, exclude={*exclude, item.pk})
