"""Our full record (`jsonl`), and the same columns flat in `parquet` and `csv`: FORMATS.md §9.

One row per decided step, with the review alongside (extra columns are fine here). Messages are
in our own form (OpenAI-style, tool-call arguments as JSON strings). No top-level `type` or
`message` column, so `datasets` never mistakes the file for an agent-trace log. `tools` and
`labels` are JSON strings (rows with differently shaped objects would not merge into one Arrow
type). In parquet and csv, messages / expected / rejected are JSON strings too."""

from __future__ import annotations

from typing import Any

from evals.cases import Case, dumps
from evals.formats.base import ExportContext, Format


def full_record(case: Case, ctx: ExportContext) -> dict[str, Any]:
    return {
        "id": case.record_id,
        "step_id": case.step_id,
        "item_id": case.item_id,
        "dataset_version": case.version_id,
        "split": case.split,
        "agent": case.agent,
        "queue": case.queue,
        "kind": case.kind,
        "name": case.name,
        "verdict": case.verdict,
        "auto": case.auto,
        "reason": case.reason,
        "reviewers": case.reviewers,
        "labels": dumps(case.labels),
        "tags": case.tags,
        "confidence": case.confidence,
        # The datetime itself: orjson writes it in ISO 8601 as `Case.decided_at` has it (the
        # flat formats take that text).
        "decided_at": case.decided,
        "messages": case.messages,
        "tools": dumps(case.tools) if case.tools else None,
        "expected": case.expected,
        "rejected": case.rejected,
        "images": [ctx.image_file(a) for a in case.attachments],
    }


def jsonl_records(case: Case, ctx: ExportContext) -> list[dict[str, Any]] | str:
    return [full_record(case, ctx)]


JSON_COLUMNS = ("messages", "expected", "rejected")


def flat_records(case: Case, ctx: ExportContext) -> list[dict[str, Any]] | str:
    record = full_record(case, ctx)
    record["decided_at"] = case.decided_at
    for column in JSON_COLUMNS:
        record[column] = None if record[column] is None else dumps(record[column])
    return [record]


# Column order and Arrow types of the flat formats.
FLAT_COLUMNS: list[tuple[str, str]] = [
    ("id", "string"),
    ("step_id", "int64"),
    ("item_id", "int64"),
    ("dataset_version", "int64"),
    ("split", "string"),
    ("agent", "string"),
    ("queue", "string"),
    ("kind", "string"),
    ("name", "string"),
    ("verdict", "string"),
    ("auto", "bool"),
    ("reason", "string"),
    ("reviewers", "list<string>"),
    ("labels", "string"),
    ("tags", "list<string>"),
    ("confidence", "float64"),
    ("decided_at", "string"),
    ("messages", "string"),
    ("tools", "string"),
    ("expected", "string"),
    ("rejected", "string"),
    ("images", "list<string>"),
]

FORMATS = [
    Format("jsonl", "jsonl", "jsonl", jsonl_records, description="full record, loadable by datasets"),
    Format("parquet", "parquet", "parquet", flat_records, description="flat columns, JSON strings"),
    Format("csv", "csv", "csv", flat_records, description="flat columns, JSON strings"),
]
