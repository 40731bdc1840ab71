"""Reads for datasets: which steps a filter chooses, and the cases they make, streamed.

Live steps are read by one query (steps joined to their decision, a row per step) streamed in
chunks of 2,000 (a psycopg server-side cursor on PostgreSQL, read ahead by a thread; Django's
`iterator()` elsewhere), plus three queries per chunk: its items' queues, their reviews, its
attachments; all in one snapshot. A frozen version's cases come by `iterator()`. Both yield
`Case`s one at a time: nothing holds all rows in memory."""

from __future__ import annotations

import datetime as dt
import hashlib
import queue
import re
import threading
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import orjson
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Case as SqlCase
from django.db.models import Exists, OuterRef, Q, QuerySet, TextField, When
from django.db.models.functions import Cast, Coalesce
from django.utils.dateparse import parse_date, parse_datetime

from evals.cases import (
    AUTO_APPROVED,
    CORRECTED,
    REJECTED,
    Case,
    normalize_input,
    normalize_output,
    split_for,
)
from evals.models import DatasetVersion, EvalCase
from evals.redaction import Redactor
from reviewqueue.core.models import Agent, Attachment, Step, StepKind, StepStatus
from reviewqueue.review.models import DecisionMethod, Queue, Review, ReviewItem

User = get_user_model()
CHUNK = 2000
HUMAN_VERDICTS = (StepStatus.APPROVED, StepStatus.CORRECTED, StepStatus.REJECTED)
VERDICT_CHOICES = (*HUMAN_VERDICTS, AUTO_APPROVED)
_TIMEOUT = str(DecisionMethod.TIMEOUT)  # plain text: compared once a row
FILTER_KEYS = ("agents", "queues", "kinds", "verdicts", "labels", "tags", "since", "until", "include_auto_approved")
LABEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_ -]{0,59}$")


class FilterError(ValueError):
    """A bad filter. `errors` maps the filter key to its problems."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))


def _date(value: Any, *, end: bool) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None and parse_date(value) is not None:
            day = parse_date(value)
            parsed = dt.datetime.combine(day, dt.time.max if end else dt.time.min)
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise ValueError


def clean_filters(data: Any) -> dict[str, Any]:
    """Validate a filter (see Dataset.filters); returns a normalised copy or raises FilterError."""
    if data in (None, ""):
        return {}
    if not isinstance(data, dict):
        raise FilterError({"filters": ["must be an object"]})
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - set(FILTER_KEYS))
    if unknown:
        errors["filters"] = [f"unknown keys {unknown}; allowed: {', '.join(FILTER_KEYS)}"]
    clean: dict[str, Any] = {}
    for key in ("agents", "queues", "kinds", "verdicts", "tags"):
        value = data.get(key)
        if value in (None, [], ""):
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            errors[key] = ["must be a list of non-empty strings"]
            continue
        clean[key] = sorted(set(value))
    if "kinds" in clean and set(clean["kinds"]) - set(StepKind.values):
        errors["kinds"] = [f"unknown kinds; choose from {', '.join(StepKind.values)}"]
    if "verdicts" in clean and set(clean["verdicts"]) - set(VERDICT_CHOICES):
        errors["verdicts"] = [f"unknown verdicts; choose from {', '.join(VERDICT_CHOICES)}"]
    labels = data.get("labels")
    if labels not in (None, {}):
        if not isinstance(labels, dict) or not all(isinstance(k, str) and LABEL_NAME.match(k) for k in labels):
            errors["labels"] = ["must map rubric label names (letters, digits, _ - space) to values"]
        elif any("__" in k for k in labels):
            errors["labels"] = ["label names may not contain '__'"]
        else:
            clean["labels"] = labels
    for key in ("since", "until"):
        try:
            value = _date(data.get(key), end=key == "until")
        except (ValueError, TypeError):
            errors[key] = ["must be an ISO date (2026-11-25) or date-time"]
            continue
        if value is not None:
            clean[key] = value.isoformat()
    if "since" in clean and "until" in clean and clean["since"] > clean["until"]:
        errors["until"] = ["must not be before since"]
    include = data.get("include_auto_approved", False)
    if not isinstance(include, bool):
        errors["include_auto_approved"] = ["must be true or false"]
    elif include:
        clean["include_auto_approved"] = True
    if errors:
        raise FilterError(errors)
    return clean


def decided_steps(*, filters: dict[str, Any]) -> QuerySet[Step]:
    """Steps a (clean) filter chooses, by id. Human-decided only unless include_auto_approved,
    which adds auto-approved steps and SLA-timeout decisions."""
    human = Q(status__in=HUMAN_VERDICTS, decision__isnull=False) & ~Q(decision__method=DecisionMethod.TIMEOUT)
    chosen = human
    if filters.get("include_auto_approved"):
        chosen = (
            human
            | Q(status=StepStatus.AUTO_APPROVED)
            | Q(
                status__in=HUMAN_VERDICTS,
                decision__method=DecisionMethod.TIMEOUT,
            )
        )
    qs = Step.objects.filter(chosen)
    if filters.get("agents"):
        qs = qs.filter(agent__name__in=filters["agents"])
    if filters.get("queues"):
        qs = qs.filter(decision__item__queue__slug__in=filters["queues"])
    if filters.get("kinds"):
        qs = qs.filter(kind__in=filters["kinds"])
    if filters.get("verdicts"):
        qs = qs.filter(status__in=filters["verdicts"])
    if filters.get("since"):
        since = filters["since"]
        qs = qs.filter(Q(decision__decided_at__gte=since) | Q(decision__isnull=True, created_at__gte=since))
    if filters.get("until"):
        until = filters["until"]
        qs = qs.filter(Q(decision__decided_at__lte=until) | Q(decision__isnull=True, created_at__lte=until))
    for name, value in (filters.get("labels") or {}).items():
        qs = qs.filter(
            Exists(Review.objects.filter(item_id=OuterRef("decision__item_id"), **{f"labels__{name}": value}))
        )
    for tag in filters.get("tags") or []:
        if connection.features.supports_json_field_contains:
            qs = qs.filter(metadata__tags__contains=[tag])
        else:  # SQLite: match the quoted tag inside the JSON text of the list
            qs = qs.filter(metadata__tags__contains=orjson.dumps(tag).decode())
    return qs.order_by("id")


STEP_FIELDS = (
    "id",
    "agent_id",
    "kind",
    "name",
    "input_text",
    "output_text",
    "status",
    "decision_output_text",
    "decision__reason",
    "decision__method",
    "decision__item_id",
    "decision__reviewer_id",
    "decided",
    "confidence",
    "metadata_text",
)
# Columns of a step's row read by name outside step_cases' unpacking.
_INPUT, _OUTPUT, _CORRECTION, _REASON, _ITEM = (
    STEP_FIELDS.index(name)
    for name in ("input_text", "output_text", "decision_output_text", "decision__reason", "decision__item_id")
)


PREFETCH_CHUNKS = 2  # chunks the reading thread may run ahead (memory: ~2 x 2,000 rows)
_DONE = object()


def _run_ahead(source: Iterator[Any], depth: int = PREFETCH_CHUNKS) -> Iterator[Any]:
    """The items of `source`, produced in a background thread up to `depth` ahead, so its
    waiting on the database (psycopg releases the GIL while it waits) overlaps our work on
    the previous chunk. Errors in the thread are raised here; closing this generator stops
    the thread and waits for it (it never outlives the caller's transaction)."""
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put((True, item)):
                    return
            put((True, _DONE))
        except BaseException as exc:  # handed to the consumer, raised there
            put((False, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="rq-export-reader", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = handoff.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _Names(dict):
    """id -> name for a small table (agents, queues, users), filled on first use of each id."""

    def __init__(self, model: Any, field: str) -> None:
        super().__init__()
        self.model, self.field = model, field

    def __missing__(self, key: int | None) -> str:
        if key is None:
            return ""
        value = self.model.objects.filter(pk=key).values_list(self.field, flat=True).first() or ""
        self[key] = value
        return value


def _column(model: Any, name: str) -> str:
    return model._meta.get_field(name).column


def _attachments(cursor: Any, first: int, last: int) -> dict[int, list[dict[str, Any]]]:
    """Attachments of the steps with ids first..last (a chunk: ranges are cheaper than IN lists)."""
    found: dict[int, list[dict[str, Any]]] = {}
    columns = ", ".join(_column(Attachment, f) for f in ("step", "image", "content_type", "sha256", "width", "height"))
    step = _column(Attachment, "step")
    cursor.execute(
        f"SELECT {columns} FROM {Attachment._meta.db_table} WHERE {step} >= %s AND {step} <= %s ORDER BY id",
        [first, last],
    )
    for step_id, path, content_type, sha256, width, height in cursor.fetchall():
        found.setdefault(step_id, []).append(
            {"path": path, "content_type": content_type, "sha256": sha256, "width": width, "height": height}
        )
    return found


# A step's row, its item's queue id, the ids of its item's reviewers in review order, their
# rubric answers merged (later reviews win), its attachments.
StepEntry = tuple[tuple[Any, ...], int | None, list[int], dict[str, Any], list[dict[str, Any]]]
_EMPTY_LABELS = (None, "{}")
# A chunk's items are read by the range of their ids when it holds at most SPREAD ids per item
# (items are made as steps arrive, so a chunk's lie close together), else by their list.
SPREAD = 4


def _items(cursor: Any, item_ids: list[int | None]) -> tuple[dict[int, int], dict[int, list[tuple[Any, ...]]]]:
    """The queue of each item of a chunk's steps, and its reviews (item id, reviewer id, rubric
    answers as JSON text) in review order: two queries a chunk, which read the items' and the
    reviews' indexes in order. (Joined to each step's row instead, they took two index lookups a
    row, and a step with several reviews repeated its wide row once per review.)"""
    ids = sorted({item_id for item_id in item_ids if item_id is not None})
    if not ids:
        return {}, {}
    where, params = _item_filter(ids)
    item_key, queue = _column(ReviewItem, "id"), _column(ReviewItem, "queue")
    cursor.execute(f"SELECT {item_key}, {queue} FROM {ReviewItem._meta.db_table} WHERE {item_key} {where}", params)
    queues = dict(cursor.fetchall())
    item, reviewer, labels = (_column(Review, name) for name in ("item", "reviewer", "labels"))
    cursor.execute(
        f"SELECT {item}, {reviewer}, CAST({labels} AS text) FROM {Review._meta.db_table}"
        f" WHERE {item} {where} ORDER BY {item}, {_column(Review, 'id')}",
        params,
    )
    reviews: dict[int, list[tuple[Any, ...]]] = {}
    for review in cursor.fetchall():
        reviews.setdefault(review[0], []).append(review)
    return queues, reviews


def _item_filter(ids: list[int]) -> tuple[str, list[Any]]:
    """The condition on an item id that picks `ids` (sorted): their range, if it holds at most
    SPREAD ids per item (its other items are read and left unused), else their list."""
    if ids[-1] - ids[0] < SPREAD * len(ids):
        return "BETWEEN %s AND %s", [ids[0], ids[-1]]
    if connection.vendor == "postgresql":
        return "= ANY(%s)", [ids]
    return f"IN ({', '.join(['%s'] * len(ids))})", ids


def _labels(text: str, parsed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A review's rubric answers from their JSON text (shared: copy before changing)."""
    value = parsed.get(text)
    if value is None:
        value = orjson.loads(text)
        value = value if isinstance(value, dict) else {}
        if len(parsed) < 1000:  # rubric answers repeat: parse each distinct text once
            parsed[text] = value
    return value


Fetch = Callable[[], list[tuple[Any, ...]]]


def _step_chunks(fetch: Fetch, cursor: Any) -> Iterator[list[StepEntry]]:
    """Rows of STEP_FIELDS (one a step, in step id order) as chunks of step entries, with their
    items' queues and reviews (`_items`) and their attachments (one range query a chunk)."""
    parsed: dict[str, dict[str, Any]] = {}
    while rows := fetch():
        queues, reviews = _items(cursor, [row[_ITEM] for row in rows])
        attachments = _attachments(cursor, rows[0][0], rows[-1][0])
        entries: list[StepEntry] = []
        for row in rows:
            item_id = row[_ITEM]
            found = reviews.get(item_id, ())
            labels: dict[str, Any] = {}
            for _, _, text in found:  # later reviews win
                if text not in _EMPTY_LABELS:
                    labels.update(_labels(text, parsed))
            reviewer_ids = [review[1] for review in found if review[1] is not None]
            entries.append((row, queues.get(item_id), reviewer_ids, labels, attachments.get(row[0], [])))
        yield entries


def _plain_chunks(fetch: Fetch, cursor: Any) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := fetch():
        yield chunk


def _stream_chunks(
    qs: QuerySet, chunks: Callable[[Fetch, Any], Iterator[Any]], *, read_ahead: bool = True
) -> Iterator[Any]:
    """The rows of a values_list query, streamed: `chunks(fetch, cursor)` turns them into
    chunks (`fetch()` gives the next 2,000 rows, `cursor` runs any per-chunk query).

    On PostgreSQL the rows come from a psycopg server-side cursor in binary mode directly
    (Django's per-value converters cost as much as the fetch itself), and a reader thread
    runs `chunks` ahead of the caller (`_run_ahead`), so the database's time overlaps the
    caller's work; it uses only the psycopg connection, never Django's (which is per thread).
    Without `read_ahead` (a parallel export: its processes keep the cores busy, and a second
    thread per process only adds GIL hand-offs) the caller's thread reads. Unless the caller
    has a transaction of its own, the rows and the per-chunk queries read one snapshot
    (REPEATABLE READ). Elsewhere Django's iterator(), read in the caller's thread."""
    if connection.vendor != "postgresql":
        iterator = qs.iterator(chunk_size=CHUNK)
        with connection.cursor() as cursor:
            yield from chunks(lambda: list(islice(iterator, CHUNK)), cursor)
        return
    sql, params = qs.query.sql_with_params()
    connection.ensure_connection()
    raw = connection.connection
    own_transaction = not connection.in_atomic_block
    with (
        transaction.atomic(),
        raw.cursor(name=f"rq_export_{id(qs):x}", binary=True) as rows,
        raw.cursor() as cursor,
    ):
        if own_transaction:  # one snapshot for the rows and each chunk's queries (else the caller's)
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # JIT-compiling this plan costs more than it saves on a stream of simple rows (measured:
        # about 5% of the database's CPU time for a third of 1,000,000 steps).
        cursor.execute("SET LOCAL jit = off")
        rows.execute(sql, params)
        stream = chunks(lambda: rows.fetchmany(CHUNK), cursor)
        yield from _run_ahead(stream) if read_ahead else stream


def _exported_input(text: str | None, value: Any) -> str | None:
    """The part of a step input's JSON text the redaction pre-check must scan. The input of a
    step with tools is `{"messages": [...], "tools": [...]}`, and only the messages are ever
    redacted, so the text before the first `"messages": [` is left out when the input is an
    object with a message list: that first match is at or before its key's (PostgreSQL writes
    the shorter "tools" key first), and what precedes it is the other keys' values, where no
    exported message is. Any other input is scanned whole."""
    cut = _messages_cut(text) if _messages_object(value) else 0
    return text[cut:] if cut else text


def _messages_cut(text: str | None) -> int:
    """Where the first `"messages": [` of an input's JSON text starts (0: none, or at 0)."""
    cut = text.find('"messages": [') if text is not None else -1
    return cut if cut > 0 else 0


def raw_content_hash(*parts: str | None) -> str:
    """The content hash from the stored JSON texts (on PostgreSQL the canonical text jsonb
    renders: a step's input and output are kept in that form, see WholeJSONField)."""
    return hashlib.sha256("\x00".join([part or "" for part in parts]).encode()).hexdigest()


def step_cases(
    *,
    filters: dict[str, Any],
    test_ratio: float = 0.1,
    redactor: Redactor | None = None,
    ids: tuple[int | None, int | None] = (None, None),
    read_ahead: bool = True,
) -> Iterator[Case]:
    """Cases for the steps a filter chooses, in step order, redacted if a redactor is given;
    `ids` = (first, stop) keeps only the step ids first <= id < stop (a parallel export's slice);
    `read_ahead=False` reads in the caller's thread (see `_stream_chunks`).

    One query streams the steps joined to their decision, item and reviews (a row per review,
    in step order); images come with one range query per chunk of 2,000 steps. The per-row
    work is plain tuples and dicts: the redactor walks only the rows its pre-check flags."""
    qs = decided_steps(filters=filters).annotate(
        input_text=Cast("input", TextField()),
        output_text=Cast("output", TextField()),
        # Only a correction's decision output is exported (an approval's is the step's output,
        # a rejection has none): the others are not read at all.
        decision_output_text=SqlCase(When(status=CORRECTED, then=Cast("decision__output", TextField()))),
        metadata_text=Cast("metadata", TextField()),
        decided=Coalesce("decision__decided_at", "created_at"),  # auto-approved: when it arrived
    )
    first, stop = ids
    # A slice's range is also put on the decisions when every step has one: PostgreSQL merges
    # the steps with the decisions in step order, and would otherwise read the decisions from
    # the very first step's on, not from the slice's first.
    all_decided = not filters.get("include_auto_approved")
    if first is not None:
        qs = qs.filter(id__gte=first, **({"decision__step_id__gte": first} if all_decided else {}))
    if stop is not None:
        qs = qs.filter(id__lt=stop, **({"decision__step_id__lt": stop} if all_decided else {}))
    agents, queues, users = _Names(Agent, "name"), _Names(Queue, "slug"), _Names(User, "username")
    qs = qs.values_list(*STEP_FIELDS).order_by("id")
    for entries in _stream_chunks(qs, _step_chunks, read_ahead=read_ahead):
        if redactor is not None:  # the chunk's pre-check, in one search (see _flagged_steps)
            flagged, cuts = _flagged_steps(entries, redactor)
        for number, (row, queue_id, reviewer_ids, labels, step_attachments) in enumerate(entries):
            (step_id, agent_id, kind, name, input_text, output_text, status, decision_text, reason, method,
             item_id, reviewer_id, decided, confidence, metadata_text) = row  # fmt: skip
            value = orjson.loads(input_text) if input_text is not None else None
            messages, tools = normalize_input(value)
            original = normalize_output(orjson.loads(output_text) if output_text is not None else None)
            if status == CORRECTED:
                expected = normalize_output(orjson.loads(decision_text) if decision_text is not None else None)
                rejected, target = original, decision_text
            elif status == REJECTED:
                expected, rejected, target = None, original, output_text
            else:
                expected, rejected, target = original, None, output_text
            if reviewer_ids:
                reviewers = [users[r] for r in reviewer_ids]
            else:
                reviewers = [users[reviewer_id]] if reviewer_id is not None else []
            tags: list[str] = []
            if metadata_text and '"tags"' in metadata_text:
                found = orjson.loads(metadata_text).get("tags")
                tags = [t for t in found if isinstance(t, str)] if isinstance(found, list) else []
            digest = raw_content_hash(
                input_text,
                target,
                output_text if status in (CORRECTED, REJECTED) else None,
                status,
                kind,
                *(a["sha256"] for a in step_attachments),
            )
            # Positional, in Case's field order (keyword arguments cost a microsecond a row).
            case = Case(
                step_id,
                item_id,
                agents[agent_id],
                queues[queue_id],
                kind,
                name,
                status,  # verdict
                status == AUTO_APPROVED or method == _TIMEOUT,  # auto
                reason or "",
                messages,
                tools,
                expected,
                rejected,
                split_for(step_id, test_ratio),
                labels,
                reviewers,
                tags,
                step_attachments,
                confidence,
                decided,
                None,  # version_id
                digest,
            )
            # The exact pre-check, for the steps the chunk's search flagged, and for any whose
            # input it searched from a "messages" match that the parsed input does not vouch for.
            if redactor is not None and (flagged[number] or (cuts[number] and not _messages_object(value))):
                # An approval's decision output is the step's output: one scan of that text is enough.
                other_text = decision_text if decision_text != output_text else None
                if redactor.may_contain(_exported_input(input_text, value), output_text, other_text, reason, labels):
                    redactor.redact_case(case)
            yield case


def _flagged_steps(entries: list[StepEntry], redactor: Redactor) -> tuple[list[bool], list[int]]:
    """The redaction pre-check of a chunk of steps, before their cases are made: whether the
    texts of each may hold something to redact (`Redactor.may_contain_rows`, one search for
    the chunk), and where its input was searched from (0: all of it). The input is searched
    from its first `"messages": [`, as `_exported_input` would; that holds only if the parsed
    input is an object with a message list, which the caller checks (`_messages_object`)."""
    inputs, cuts, outputs, corrections, reasons, labels = [], [], [], [], [], []
    for row, _, _, merged, _ in entries:
        text = row[_INPUT]
        cut = _messages_cut(text)
        inputs.append(text[cut:] if cut else text)
        cuts.append(cut)
        outputs.append(row[_OUTPUT])
        corrections.append(row[_CORRECTION])  # a correction's output (None for the other verdicts)
        reasons.append(row[_REASON])
        labels.append(orjson.dumps(merged).decode() if merged else None)
    return redactor.may_contain_rows([inputs, outputs, corrections, reasons, labels]), cuts


def _messages_object(value: Any) -> bool:
    return type(value) is dict and type(value.get("messages")) is list


JSON_COLUMNS = ("messages", "tools", "expected", "rejected", "labels", "reviewers", "tags", "attachments")
VERSION_FIELDS = (
    "step_ref",
    "item_ref",
    "agent",
    "queue",
    "kind",
    "name",
    "verdict",
    "auto",
    "reason",
    "messages_text",
    "tools_text",
    "expected_text",
    "rejected_text",
    "split",
    "labels_text",
    "reviewers_text",
    "tags_text",
    "attachments_text",
    "confidence",
    "decided_at",
    "content_hash",
)


# The fields of a frozen case the redaction pre-check reads (positions in VERSION_FIELDS).
_CHECKED_VERSION_FIELDS = tuple(
    VERSION_FIELDS.index(name) for name in ("messages_text", "expected_text", "rejected_text", "reason", "labels_text")
)


def version_cases(*, version: DatasetVersion, split: str = "all", redactor: Redactor | None = None) -> Iterator[Case]:
    """The frozen cases of a version, in order, redacted if a redactor is given. JSON columns
    are read as text and parsed with orjson (as `step_cases` does)."""
    qs = EvalCase.objects.filter(version=version)
    if split in ("train", "test"):
        qs = qs.filter(split=split)
    qs = qs.annotate(
        **{f"{name}_text": Cast(name, TextField()) for name in JSON_COLUMNS},
    ).order_by("position")
    loads, version_id = orjson.loads, version.pk
    for rows in _stream_chunks(qs.values_list(*VERSION_FIELDS), _plain_chunks):
        if redactor is not None:  # the chunk's pre-check, in one search
            columns = [[row[at] for row in rows] for at in _CHECKED_VERSION_FIELDS]
            flagged = redactor.may_contain_rows(columns)
        for number, row in enumerate(rows):
            (step_id, item_id, agent, queue, kind, name, verdict, auto, reason, messages_text, tools_text,
             expected_text, rejected_text, split_, labels_text, reviewers_text, tags_text, attachments_text,
             confidence, decided_at, digest) = row  # fmt: skip
            # Positional, in Case's field order (keyword arguments cost a microsecond a row).
            case = Case(
                step_id,
                item_id,
                agent,
                queue,
                kind,
                name,
                verdict,
                auto,
                reason,
                (loads(messages_text) if messages_text is not None else None) or [],
                loads(tools_text) if tools_text is not None else None,
                loads(expected_text) if expected_text is not None else None,
                loads(rejected_text) if rejected_text is not None else None,
                split_,
                (loads(labels_text) if labels_text is not None else None) or {},
                (loads(reviewers_text) if reviewers_text is not None else None) or [],
                (loads(tags_text) if tags_text is not None else None) or [],
                (loads(attachments_text) if attachments_text is not None else None) or [],
                confidence,
                decided_at,
                version_id,
                digest,
            )
            if (
                redactor is not None
                and flagged[number]
                and redactor.may_contain(messages_text, expected_text, rejected_text, reason, labels_text)
            ):
                redactor.redact_case(case)
            yield case
