"""Ingest: validate, de-duplicate, route and store the steps an agent sends.

This is the hot path of the agent API (batches of up to 1000 steps), so validation is plain
Python over the decoded JSON rather than a serializer per step, and every table is written with
one bulk statement per request.

Semantics (DESIGN §3, §4):
- All or nothing: every entry is validated (attachments decoded and checked by Pillow) before
  anything is written; one bad entry fails the whole request with per-entry errors.
- Idempotent on (agent, external_id): a replayed step is not stored again; its answer repeats the
  first result (the routing it got then) with `created: false`. A second entry with the same
  external_id inside one batch is a replay of the first one.
- Safe under concurrent identical requests: the insert relies on the unique constraint; a request
  that loses the race gets an IntegrityError, rolls back and retries, and then sees the winner's
  rows as replays.
- New steps are the usual case, so the first attempt does not look for replays at all: it inserts,
  and the unique constraint tells when some of the steps were stored before. Only then (an
  IntegrityError: rolled back, nothing kept) is the request done again with the replay lookup.
- Parents: `parent_id` is kept as `parent_external_id` always; `parent` is linked when the parent
  step exists (earlier, or earlier/later in the same request).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import OuterRef, Subquery
from django.db.models.expressions import RawSQL
from django.utils import timezone

from reviewqueue.core import audit
from reviewqueue.core.images import ImageError, NormalisedImage, normalise_attachment
from reviewqueue.core.models import Agent, Attachment, Step, StepKind, StepStatus, Trace
from reviewqueue.core.rows import cursor as hot_cursor
from reviewqueue.core.rows import pipelined

STEP_FIELDS = frozenset(
    {
        "external_id",
        "trace_id",
        "parent_id",
        "kind",
        "name",
        "input",
        "output",
        "confidence",
        "metadata",
        "attachments",
        "blocking",
    }
)
KINDS = frozenset(StepKind.values)
MAX_ID_LENGTH = 200
MAX_NAME_LENGTH = 200
MAX_ATTACHMENTS_PER_STEP = 20
# Attempts per request: the first assumes all steps are new; the rest look replays up first
# (a replay, or a concurrent request storing the same external ids, makes the first one fail).
CONCURRENT_RETRIES = 4


class IngestValidationError(Exception):
    """Bad input. `entry_errors` maps the index of each failing entry to {field: [messages]}."""

    def __init__(self, entry_errors: dict[int, dict[str, list[str]]], total: int) -> None:
        self.entry_errors = entry_errors
        self.total = total
        super().__init__(self.batch_detail())

    def batch_errors(self) -> dict[str, Any]:
        return {"steps": {str(i): errs for i, errs in sorted(self.entry_errors.items())}}

    def batch_detail(self) -> str:
        failed = sorted(self.entry_errors)
        first = failed[0]
        field_name, messages = next(iter(self.entry_errors[first].items()))
        entries = ", ".join(str(i) for i in failed[:20]) + (", …" if len(failed) > 20 else "")
        return (
            f"steps[{first}].{field_name}: {messages[0]} "
            f"({len(failed)} of {self.total} entries invalid: {entries}; nothing was stored)"
        )

    def single_detail(self) -> str:
        field_name, messages = next(iter(self.entry_errors[0].items()))
        return f"{field_name}: {messages[0]}"


@dataclass(slots=True)
class CleanStep:
    external_id: str
    trace_id: str | None
    parent_id: str
    kind: str
    name: str
    input: Any
    output: Any
    confidence: float | None
    metadata: dict
    blocking: bool
    attachments: list[NormalisedImage] = field(default_factory=list)


# --- validation ---------------------------------------------------------------------------------


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "must be valid Unicode (no lone surrogates)"
    return None


def _json_problem(value: Any) -> str | None:
    """Why `value` cannot be stored as JSON (on PostgreSQL jsonb too), or None."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except ValueError:
        return "must not contain NaN or Infinity"
    except (TypeError, RecursionError):
        return "must be JSON"
    if "\\u0000" in text:
        return "must not contain NUL characters (\\u0000)"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "must be valid Unicode (no lone surrogates)"
    return None


def _optional_id(payload: Mapping[str, Any], key: str, errors: dict[str, list[str]]) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        errors[key] = ["must be a string"]
        return ""
    if len(value) > MAX_ID_LENGTH:
        errors[key] = [f"must be at most {MAX_ID_LENGTH} characters"]
        return ""
    problem = _text_problem(value)
    if problem:
        errors[key] = [problem]
    return value


def validate_step(payload: Any) -> tuple[CleanStep | None, dict[str, list[str]]]:
    """One entry: the cleaned step, or None and {field: [messages]}."""
    if not isinstance(payload, dict):
        return None, {"non_field_errors": ["each step must be a JSON object"]}
    errors: dict[str, list[str]] = {}
    for key in payload.keys() - STEP_FIELDS:
        errors[str(key)] = ["unknown field"]

    external_id = payload.get("external_id")
    if external_id is None or external_id == "":
        errors["external_id"] = ["required, a non-empty string"]
    elif not isinstance(external_id, str):
        errors["external_id"] = ["must be a string"]
    elif len(external_id) > MAX_ID_LENGTH:
        errors["external_id"] = [f"must be at most {MAX_ID_LENGTH} characters"]
    elif problem := _text_problem(external_id):
        errors["external_id"] = [problem]

    trace_id = _optional_id(payload, "trace_id", errors)
    parent_id = _optional_id(payload, "parent_id", errors)

    kind = payload.get("kind")
    if kind is None:
        kind = StepKind.OTHER.value
    elif not isinstance(kind, str) or kind not in KINDS:
        errors["kind"] = [f"must be one of {', '.join(StepKind.values)}"]

    name = payload.get("name")
    if name is None:
        name = ""
    elif not isinstance(name, str):
        errors["name"] = ["must be a string"]
    elif len(name) > MAX_NAME_LENGTH:
        errors["name"] = [f"must be at most {MAX_NAME_LENGTH} characters"]
    elif problem := _text_problem(name):
        errors["name"] = [problem]

    confidence = payload.get("confidence")
    if confidence is not None:
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, int | float)
            or not 0 <= confidence <= 1  # a huge int fails here, before float()
            or not math.isfinite(confidence)
        ):
            errors["confidence"] = ["must be a number between 0 and 1, or null"]
        else:
            confidence = float(confidence)

    metadata = payload.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        errors["metadata"] = ["must be a JSON object"]

    blocking = payload.get("blocking")
    if blocking is None:
        blocking = False
    elif not isinstance(blocking, bool):
        errors["blocking"] = ["must be true or false"]

    step_input = payload.get("input")
    step_output = payload.get("output")
    # One C-speed pass over the JSON parts; only when it fails are they checked one by one.
    if _json_problem((step_input, step_output, metadata)):
        for key, value in (("input", step_input), ("output", step_output), ("metadata", metadata)):
            if key not in errors and (problem := _json_problem(value)):
                errors[key] = [problem]

    images: list[NormalisedImage] = []
    attachments = payload.get("attachments")
    if attachments is not None:
        if not isinstance(attachments, list):
            errors["attachments"] = ["must be a list of {filename, content_type, data} objects"]
        elif len(attachments) > MAX_ATTACHMENTS_PER_STEP:
            errors["attachments"] = [f"at most {MAX_ATTACHMENTS_PER_STEP} attachments per step"]
        elif not errors:  # decoding images is the expensive part: only for otherwise valid steps
            for n, item in enumerate(attachments):
                try:
                    images.append(normalise_attachment(item, label=f"attachments[{n}]"))
                except ImageError as exc:
                    errors.setdefault("attachments", []).append(exc.message)

    if errors:
        return None, errors
    return (
        CleanStep(
            external_id=external_id,
            trace_id=trace_id or None,
            parent_id=parent_id,
            kind=kind,
            name=name,
            input=step_input,
            output=step_output,
            confidence=confidence,
            metadata=metadata,
            blocking=blocking,
            attachments=images,
        ),
        {},
    )


def validate_steps(payloads: list[Any]) -> list[CleanStep]:
    cleaned: list[CleanStep] = []
    entry_errors: dict[int, dict[str, list[str]]] = {}
    for index, payload in enumerate(payloads):
        step, errors = validate_step(payload)
        if errors:
            entry_errors[index] = errors
        else:
            cleaned.append(step)  # type: ignore[arg-type]
    if entry_errors:
        raise IngestValidationError(entry_errors, total=len(payloads))
    return cleaned


# --- routing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DefaultDecision:
    """Auto-approve, used only when the routing module is not available."""

    action: str = "auto_approve"
    queue: Any = None
    rule: Any = None
    rule_version: int | None = None
    priority: int = 0
    reason: dict = field(default_factory=dict)


def _routing_functions() -> tuple[Any, Any] | None:
    try:
        from reviewqueue.routing.services import load_rules, route_step
    except ImportError:  # pragma: no cover - the routing module is part of the project
        return None
    return load_rules, route_step


# --- writing ------------------------------------------------------------------------------------


def ingest_steps(*, agent: Agent, payloads: list[Any]) -> tuple[list[dict[str, Any]], bool]:
    """Validate and store `payloads` for `agent`. Returns the per-step answers in the order sent
    and whether anything was created. Raises IngestValidationError (nothing stored) on bad input."""
    cleaned = validate_steps(payloads)
    if not cleaned:
        return [], False
    routing = _routing_functions()
    rules = routing[0]() if routing else None
    for attempt in range(CONCURRENT_RETRIES):
        try:
            with transaction.atomic():
                return _store(agent, cleaned, routing[1] if routing else None, rules, find_replays=attempt > 0)
        except (IntegrityError, OperationalError) as exc:
            # Some of these external ids were stored before, or a concurrent request stored them
            # first (or two requests sharing ids deadlocked): start over, looking replays up.
            if attempt == CONCURRENT_RETRIES - 1 or not _is_race(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _is_race(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    return getattr(exc.__cause__, "sqlstate", None) == "40P01"  # deadlock_detected


def _store(
    agent: Agent, cleaned: list[CleanStep], route_step: Any, rules: Any, *, find_replays: bool
) -> tuple[list[dict[str, Any]], bool]:
    """Store the new steps. Without `find_replays` every step is taken to be new, and the insert
    fails with an IntegrityError (unique external_id per agent) if one is not."""
    now = timezone.now()
    answers_by_external_id: dict[str, dict[str, Any]] = {}
    if find_replays:
        answers_by_external_id = _replay_answers(agent, list(dict.fromkeys(s.external_id for s in cleaned)))

    new_steps: list[CleanStep] = []
    seen: set[str] = set(answers_by_external_id)
    for step in cleaned:
        if step.external_id not in seen:
            seen.add(step.external_id)
            new_steps.append(step)

    if new_steps:
        answers_by_external_id.update(_create(agent, new_steps, route_step, rules, now))

    answers: list[dict[str, Any]] = []
    first_answer_given: set[str] = set()
    for step in cleaned:
        answer = answers_by_external_id[step.external_id]
        if answer["created"] and step.external_id in first_answer_given:
            answer = {**answer, "created": False}  # a duplicate inside the batch is a replay
        first_answer_given.add(step.external_id)
        answers.append(answer)
    return answers, bool(new_steps)


def _replay_answers(agent: Agent, external_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Answers for steps that already exist: the result they got when first stored."""
    existing = list(
        Step.objects.filter(agent=agent, external_id__in=external_ids).values_list(
            "id", "external_id", "status", "rule_name"
        )
    )
    if not existing:
        return {}
    from reviewqueue.review.models import ReviewItem

    reviewed = [pk for pk, _, status, _ in existing if status != StepStatus.AUTO_APPROVED]
    first_queue: dict[int, str] = {}
    if reviewed:
        for step_id, slug in (
            ReviewItem.objects.filter(step_id__in=reviewed, escalated_from__isnull=True)
            .order_by("-id")
            .values_list("step_id", "queue__slug")
        ):
            first_queue[step_id] = slug  # ordered newest first, so the first item wins
    return {
        external_id: {
            "id": pk,
            "external_id": external_id,
            "status": StepStatus.AUTO_APPROVED.value
            if status == StepStatus.AUTO_APPROVED
            else StepStatus.PENDING_REVIEW.value,
            "queue": first_queue.get(pk),
            "rule": rule_name or None,
            "created": False,
        }
        for pk, external_id, status, rule_name in existing
    }


def _trace_ids(agent: Agent, external_trace_ids: set[str], now: datetime) -> dict[str, int]:
    if not external_trace_ids:
        return {}
    wanted = list(external_trace_ids)
    traces = _existing_trace_ids(agent, wanted)
    missing = [t for t in wanted if t not in traces]
    if missing:
        Trace.objects.bulk_create(
            [Trace(agent=agent, external_id=t, created_at=now) for t in missing], ignore_conflicts=True
        )
        traces.update(_existing_trace_ids(agent, missing))
    return traces


def _existing_trace_ids(agent: Agent, external_ids: list[str]) -> dict[str, int]:
    """{external_id: id} of the agent's traces among `external_ids`. Plain SQL: on a single step
    the ORM took longer composing this query than the database took answering it."""
    table = connection.ops.quote_name(Trace._meta.db_table)
    placeholders = ", ".join(["%s"] * len(external_ids))
    with hot_cursor() as cursor:
        with pipelined():  # the ingest transaction's first statement: with its BEGIN
            cursor.execute(
                f"SELECT external_id, id FROM {table} WHERE agent_id = %s AND external_id IN ({placeholders})",
                [agent.pk, *external_ids],
            )
        return dict(cursor.fetchall())


def _create(
    agent: Agent, new_steps: list[CleanStep], route_step: Any, rules: Any, now: datetime
) -> dict[str, dict[str, Any]]:
    from reviewqueue.review.models import ReviewItem

    traces = _trace_ids(agent, {s.trace_id for s in new_steps if s.trace_id}, now)
    rows: list[Step] = []
    decisions: list[Any] = []
    for s in new_steps:
        if route_step is not None:
            facts = {
                "confidence": s.confidence,
                "kind": s.kind,
                "name": s.name,
                "agent": agent.name,
                "metadata": s.metadata,
            }
            decision = route_step(facts, rules=rules, sample_key=f"{agent.id}:{s.external_id}")
        else:
            decision = _DefaultDecision()
        decisions.append(decision)
        routed = decision.action == "route" and decision.queue is not None
        rule = decision.rule
        rows.append(
            Step(
                agent=agent,
                trace_id=traces.get(s.trace_id) if s.trace_id else None,
                external_id=s.external_id,
                parent_external_id=s.parent_id,
                kind=s.kind,
                name=s.name,
                input=s.input,
                output=s.output,
                confidence=s.confidence,
                metadata=s.metadata,
                blocking=s.blocking,
                status=StepStatus.PENDING_REVIEW if routed else StepStatus.AUTO_APPROVED,
                rule=rule,
                rule_name=rule.name if rule is not None else "",
                rule_version=decision.rule_version if rule is not None else None,
                route_reason=decision.reason or {},
                spot_check=bool(routed and rule is not None and rule.sample_rate < 1),
                created_at=now,
                updated_at=now,
            )
        )
    _insert_steps(agent, rows)

    items = []
    for row, decision in zip(rows, decisions, strict=True):
        if row.status == StepStatus.PENDING_REVIEW:
            queue = decision.queue
            items.append(
                ReviewItem(
                    queue=queue,
                    step=row,
                    priority=decision.priority or 0,
                    blocking=row.blocking,
                    due_at=now + timedelta(seconds=queue.sla_seconds) if queue.sla_seconds else None,
                    created_at=now,
                )
            )
    if items:
        ReviewItem.objects.bulk_create(items)

    attachments = [
        _attachment_row(row, image, now) for row, s in zip(rows, new_steps, strict=True) for image in s.attachments
    ]
    if attachments:
        Attachment.objects.bulk_create(attachments)

    ids = [row.pk for row in rows]
    audit.record(
        "steps.ingested",
        object_type="agent",
        object_id=agent.pk,
        agent=agent,
        after={
            "created": len(rows),
            "routed": len(items),
            "attachments": len(attachments),
            "first_id": min(ids),
            "last_id": max(ids),
            "ids": ids,
        },
    )
    return {
        row.external_id: {
            "id": row.pk,
            "external_id": row.external_id,
            "status": row.status.value if isinstance(row.status, StepStatus) else row.status,
            "queue": decision.queue.slug if row.status == StepStatus.PENDING_REVIEW else None,
            "rule": row.rule_name or None,
            "created": True,
        }
        for row, decision in zip(rows, decisions, strict=True)
    }


# The id of an agent's step by external_id (unique per agent), or NULL.
_STORED_PARENT_SQL = f"SELECT id FROM {Step._meta.db_table} WHERE agent_id = %s AND external_id = %s"


def _insert_steps(agent: Agent, rows: list[Step]) -> None:
    """One INSERT for all rows, with `parent` linked to the parent step when it exists (sent
    before, or anywhere in this request; never the step itself)."""
    in_request = {row.external_id for row in rows}
    linked = [r for r in rows if r.parent_external_id and r.parent_external_id != r.external_id]
    # A parent stored before: looked up inside the INSERT itself (no query of its own). Rare in
    # a batch, the usual case for a single step. Written out: an ORM Subquery costs more to
    # compose than the whole INSERT takes in the database.
    for row in linked:
        if row.parent_external_id not in in_request:
            row.parent_id = RawSQL(_STORED_PARENT_SQL, (agent.pk, row.parent_external_id))  # type: ignore[assignment]
    in_request_parents = [row for row in linked if row.parent_external_id in in_request]
    ids = _allocate_step_ids(len(rows)) if in_request_parents else None
    if ids is None:
        Step.objects.bulk_create(rows)
        if in_request_parents:  # SQLite: link them once the rows have ids
            Step.objects.filter(pk__in=[row.pk for row in in_request_parents]).update(
                parent=Subquery(
                    Step.objects.filter(agent=agent, external_id=OuterRef("parent_external_id")).values("pk")[:1]
                )
            )
        return
    # PostgreSQL: ids are taken from the sequence first, so parents in the same request are
    # linked in the INSERT itself (the self foreign key is checked at commit).
    by_external_id: dict[str, int] = {}
    for row, pk in zip(rows, ids, strict=True):
        row.pk = pk
        by_external_id[row.external_id] = pk
    for row in in_request_parents:
        row.parent_id = by_external_id[row.parent_external_id]
    Step.objects.bulk_create(rows)


def _allocate_step_ids(count: int) -> list[int] | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [Step._meta.db_table, count],
        )
        return [row[0] for row in cursor.fetchall()]


def _attachment_row(step: Step, image: NormalisedImage, now: datetime) -> Attachment:
    """Files are content-addressed (sha256), so a replayed or repeated image is written once.
    They are written inside the transaction; a rolled-back request can leave an unreferenced file
    behind, never a row without its file."""
    stem = f"attachments/{image.sha256[:2]}/{image.sha256}"
    image_name = _save_once(f"{stem}.{image.extension}", image.data)
    thumb_name = _save_once(f"{stem}_thumb.{image.extension}", image.thumbnail)
    return Attachment(
        step=step,
        filename=image.filename,
        content_type=image.content_type,
        image=image_name,
        thumbnail=thumb_name,
        width=image.width,
        height=image.height,
        size_bytes=len(image.data),
        sha256=image.sha256,
        created_at=now,
    )


def _save_once(name: str, data: bytes) -> str:
    if default_storage.exists(name):
        return name
    return default_storage.save(name, ContentFile(data))
