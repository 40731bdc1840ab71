"""What every format module provides, and the image helpers they share."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

from evals.cases import CORRECTED, REJECTED, Case, dumps, is_tool_result

# A format turns one case into records (one line each), or gives the reason it has none.
RecordsFn = Callable[[Case, "ExportContext"], "list[dict[str, Any]] | str"]

IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


class Unusable(Exception):
    """The case cannot make a valid record in this format; the message is the skip reason."""


def content_text(content: Any) -> str:
    """A message's content as plain text (the text parts of a content list; other values as JSON)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else dumps(content)


def arguments_object(raw: str) -> dict[str, Any]:
    """Tool-call arguments (a JSON string, as OpenAI writes them) as the object that TRL and
    Inspect want; text that is not a JSON object is kept under `_raw` / `_value`."""
    try:
        value = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


def sft_skip_reason(case: Case) -> str | None:
    """Why the case makes no fine-tuning example (rejected steps are never SFT targets), or None."""
    if case.expected is None:
        return "rejected without correction" if case.verdict == REJECTED else "no expected output"
    if is_tool_result(case.expected):
        return "tool result (context only)"
    return None


def dpo_skip_reason(case: Case) -> str | None:
    """Why the case makes no preference pair (only corrections do), or None."""
    if case.verdict != CORRECTED or case.expected is None or case.rejected is None:
        return "not a correction (no preference pair)"
    if is_tool_result(case.expected) or is_tool_result(case.rejected):
        return "tool result (context only)"
    return None


@dataclass(frozen=True)
class Format:
    name: str
    extension: str  # of the data file, e.g. "jsonl"
    container: str  # "jsonl" | "parquet" | "csv"
    records: RecordsFn
    min_records: int = 1
    description: str = ""


@dataclass
class ExportContext:
    """Per-export state formats may need: where attachments live and where image files go."""

    media_root: Path = field(default_factory=lambda: Path(settings.MEDIA_ROOT))
    out_dir: Path | None = None  # when set, images are copied to out_dir/images/<sha256>.<ext>
    images_written: set[str] = field(default_factory=set)

    def image_data_uri(self, attachment: dict[str, Any]) -> str | None:
        path = self.media_root / attachment["path"]
        if not path.is_file():
            return None
        kind = IMAGE_TYPES.get(attachment.get("content_type", ""), "png")
        return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode()

    def image_file(self, attachment: dict[str, Any]) -> str:
        """A path relative to the data file (images/<sha256>.<ext>), copying the image there."""
        kind = IMAGE_TYPES.get(attachment.get("content_type", ""), "png")
        relative = f"images/{attachment['sha256']}.{kind}"
        if self.out_dir is not None and relative not in self.images_written:
            source = self.media_root / attachment["path"]
            if source.is_file():
                target = self.out_dir / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read_bytes())
            self.images_written.add(relative)
        return relative


def review_metadata(case: Case) -> dict[str, Any]:
    """What eval formats keep in their metadata field (fine-tuning formats use the manifest)."""
    meta: dict[str, Any] = {
        "rq_step_id": case.step_id,
        "rq_item_id": case.item_id,
        "agent": case.agent,
        "queue": case.queue,
        "kind": case.kind,
        "verdict": case.verdict,
        "auto": case.auto,
        "reason": case.reason,
        "reviewers": case.reviewers,
        "labels": case.labels,
        "tags": case.tags,
        "split": case.split,
        "decided_at": case.decided_at,
    }
    if case.version_id is not None:
        meta["dataset_version"] = case.version_id
    if case.confidence is not None:
        meta["confidence"] = case.confidence
    return meta
