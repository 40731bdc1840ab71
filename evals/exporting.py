"""The streaming writer: cases in, one data file and its `manifest.jsonl` sidecar out.

Records are written as they come (nothing is collected in memory; parquet buffers one row
group). Both files are written under temporary names in the target directory and renamed into
place only when complete, the data file last, so a crash never leaves a partial file under the
real name. The manifest has one line per record (`line` = its 1-based line or row number in the
data file) linking it back to its step, item, reviewers, verdict and dataset version, and a last
line `{"summary": {...}}` with counts: rows, duplicates removed, skipped cases by reason,
redactions by kind (never the values), and warnings."""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from evals.cases import Case
from evals.dedupe import SeenDigests
from evals.formats import ExportContext, Format
from evals.formats.tabular import FLAT_COLUMNS

PROGRESS_EVERY = 1000
PARQUET_ROW_GROUP = 10_000
WRITE_BLOCK = 1 << 20


def manifest_path_for(out: Path) -> Path:
    """`train.jsonl` → `train.manifest.jsonl`, beside it."""
    return out.with_name(f"{out.stem}.manifest.jsonl")


@dataclass
class ExportResult:
    path: Path
    manifest: Path
    rows: int = 0
    cases_read: int = 0
    duplicates_removed: int = 0
    sha256: str = ""
    size_bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    redactions: Counter[str] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def summary(self, fmt: Format) -> dict[str, Any]:
        return {
            "format": fmt.name,
            "rows": self.rows,
            "cases_read": self.cases_read,
            "duplicates_removed": self.duplicates_removed,
            "skipped": dict(sorted(self.skipped.items())),
            "redactions": dict(sorted(self.redactions.items())),
            "splits": dict(sorted(self.splits.items())),
            "verdicts": dict(sorted(self.verdicts.items())),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "warnings": self.warnings,
        }


class _HashingFile:
    """A binary file that hashes what is written to it. Writes are gathered in a list and
    hashed and written 1 MiB at a time (hashlib releases the GIL on large blocks)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.hash = hashlib.sha256()
        self.size = 0
        self.parts: list[bytes] = []
        self.pending = 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.pending += len(data)
        if self.pending >= WRITE_BLOCK:
            self.flush()

    def flush(self) -> None:
        block = b"".join(self.parts)
        self.parts.clear()
        self.pending = 0
        self.file.write(block)
        self.hash.update(block)
        self.size += len(block)

    def close(self) -> None:
        self.flush()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class JsonlWriter:
    def __init__(self, path: Path) -> None:
        self.out = _HashingFile(path)

    def write(self, record: dict[str, Any]) -> None:
        out = self.out  # _HashingFile.write, inlined: this runs for every row
        data = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        out.parts.append(data)
        out.pending += len(data)
        if out.pending >= WRITE_BLOCK:
            out.flush()

    def close(self) -> tuple[str, int]:
        self.out.close()
        return self.out.hash.hexdigest(), self.out.size


class CsvWriter:
    def __init__(self, path: Path) -> None:
        self.out = _HashingFile(path)
        self.columns = [name for name, _ in FLAT_COLUMNS]
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, lineterminator="\n")
        self.writer.writerow(self.columns)
        self._flush()

    def _flush(self) -> None:
        self.out.write(self.buffer.getvalue().encode())
        self.buffer.seek(0)
        self.buffer.truncate()

    @staticmethod
    def _cell(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return orjson.dumps(value).decode()
        return value

    def write(self, record: dict[str, Any]) -> None:
        self.writer.writerow([self._cell(record[c]) for c in self.columns])
        if self.buffer.tell() > 1 << 20:
            self._flush()

    def close(self) -> tuple[str, int]:
        self._flush()
        self.out.close()
        return self.out.hash.hexdigest(), self.out.size


class ParquetWriter:
    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {
            "string": pa.string(),
            "int64": pa.int64(),
            "bool": pa.bool_(),
            "float64": pa.float64(),
            "list<string>": pa.list_(pa.string()),
        }
        self.pa = pa
        self.path = path
        self.schema = pa.schema([(name, types[kind]) for name, kind in FLAT_COLUMNS])
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")
        self.rows: list[dict[str, Any]] = []

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def write(self, record: dict[str, Any]) -> None:
        self.rows.append(record)
        if len(self.rows) >= PARQUET_ROW_GROUP:
            self._flush()

    def close(self) -> tuple[str, int]:
        self._flush()
        self.writer.close()
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest(), self.path.stat().st_size


WRITERS = {"jsonl": JsonlWriter, "csv": CsvWriter, "parquet": ParquetWriter}


def _manifest_line(line: int, case: Case) -> bytes:
    entry: dict[str, Any] = {
        "line": line,
        "id": case.record_id,
        "step_id": case.step_id,
        "item_id": case.item_id,
        "agent": case.agent,
        "queue": case.queue,
        "reviewers": case.reviewers,
        "verdict": case.verdict,
        "auto": case.auto,
        "split": case.split,
        "dataset_version": case.version_id,
        "content_hash": case.content_hash,
    }
    if case.redactions:
        entry["redactions"] = case.redactions
    return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.part-{os.getpid()}-{secrets.token_hex(4)}")


def write_export(
    *,
    cases: Iterable[Case],
    fmt: Format,
    out: Path,
    manifest: Path | None = None,
    split: str = "all",
    dedupe: bool = True,
    ctx: ExportContext | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Write `cases` in `fmt` to `out` (and the manifest), atomically. `split` keeps only the
    train or test side; `dedupe` drops cases whose content hash was already written (a frozen
    version is unique already). `progress(cases_read, rows)` is called every 1000 cases."""
    out = Path(out)
    manifest = Path(manifest) if manifest else manifest_path_for(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    ctx = ctx or ExportContext(out_dir=out.parent)
    result = ExportResult(path=out, manifest=manifest)
    data_tmp, manifest_tmp = _temporary(out), _temporary(manifest)
    writer = WRITERS[fmt.container](data_tmp)
    manifest_out = _HashingFile(manifest_tmp)
    seen = SeenDigests() if dedupe else None
    records_fn, write, write_manifest = fmt.records, writer.write, manifest_out.write
    skipped, splits, verdicts, redactions = result.skipped, result.splits, result.verdicts, result.redactions
    cases_read = rows = duplicates = 0
    try:
        # The loop makes no reference cycles, so the cyclic GC's passes over the chunk in hand
        # (~2 us a row) buy nothing; it is switched back on (and catches up) when the loop ends.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for case in cases:
                cases_read += 1
                if progress is not None and cases_read % PROGRESS_EVERY == 0:
                    progress(cases_read, rows)
                if split != "all" and case.split != split:
                    continue
                if seen is not None and not seen.add(int(case.content_hash[:16], 16)):
                    duplicates += 1
                    continue
                produced = records_fn(case, ctx)
                if type(produced) is str:
                    skipped[produced] += 1
                    continue
                for record in produced:
                    write(record)
                    rows += 1
                    write_manifest(_manifest_line(rows, case))
                splits[case.split] += 1
                verdicts[case.verdict] += 1
                if case.redactions:
                    redactions.update(case.redactions)
        finally:
            if gc_was_enabled:
                gc.enable()
            result.cases_read, result.rows, result.duplicates_removed = cases_read, rows, duplicates
            close = getattr(cases, "close", None)
            if close is not None:  # a generator: stop its reader (and cursor) now, also on errors
                close()
        result.sha256, result.size_bytes = writer.close()
        if result.rows < fmt.min_records:
            result.warnings.append(
                f"{fmt.name} needs at least {fmt.min_records} examples per file; this one has {result.rows}"
            )
        manifest_out.write(orjson.dumps({"summary": result.summary(fmt)}, option=orjson.OPT_APPEND_NEWLINE))
        manifest_out.close()
        os.replace(manifest_tmp, manifest)
        os.replace(data_tmp, out)
    except BaseException:
        for leftover in (data_tmp, manifest_tmp):
            leftover.unlink(missing_ok=True)
        raise
    if progress is not None:
        progress(result.cases_read, result.rows)
    return result


def remove_stale_parts(directory: Path, *, older_than_seconds: float = 0) -> int:
    """Delete temporary files a killed export left behind; returns how many."""
    removed = 0
    now = time.time()
    for part in directory.glob(".*.part-*") if directory.is_dir() else []:
        if now - part.stat().st_mtime >= older_than_seconds:
            part.unlink(missing_ok=True)
            removed += 1
    return removed
