"""The streaming writer: cases in, one data file and its `manifest.jsonl` sidecar out.

Records are written as they come (nothing is collected in memory; parquet buffers one row
group). Both files are written under temporary names in the target directory and renamed into
place only when complete, the data file last, so a crash never leaves a partial file under the
real name. The manifest has one line per record (`line` = its 1-based line or row number in the
data file) linking it back to its step, item, reviewers, verdict and dataset version, and a last
line `{"summary": {...}}` with counts: rows, duplicates removed, skipped cases by reason,
redactions by kind (never the values), and warnings."""

from __future__ import annotations

import contextlib
import csv
import gc
import hashlib
import io
import os
import secrets
import time
from array import array
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
# An export's files are handed to the disk every WRITEBACK_EVERY bytes, and the pages written
# back since are dropped from the page cache (`_HashingFile.flush`): an export of gigabytes
# keeps a bounded page cache, reusing its pages, instead of filling memory with dirty pages
# that the final fsync then writes all at once.
WRITEBACK_EVERY = 64 << 20


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
    # A parallel export's worker processes (pid, cases_read, peak_rss_kib); not in the summary.
    workers: list[dict[str, int]] = field(default_factory=list)

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
    hashed and written 1 MiB at a time (hashlib releases the GIL on large blocks). An export's
    files are synced when closed (`part=False`), and the data file is hashed (`hashed`); a
    worker's part files (`part=True`) are neither hashed nor synced."""

    def __init__(self, path: Path, *, hashed: bool = True, part: bool = False) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.hash = hashlib.sha256() if hashed and not part else None
        self.synced = not part
        self.size = 0
        self.advised = self.dropped = 0  # see flush
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
        if self.hash is not None:
            self.hash.update(block)
        self.size += len(block)
        if self.synced and self.size - self.advised >= WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
            # Starts writing back what was written since the last call, and drops the pages
            # before that, written back by now (DONTNEED leaves dirty pages where they are).
            self.file.flush()
            os.posix_fadvise(self.file.fileno(), self.dropped, self.size - self.dropped, os.POSIX_FADV_DONTNEED)
            self.dropped, self.advised = self.advised, self.size

    def close(self) -> None:
        self.flush()
        self.file.flush()
        if self.synced:
            os.fsync(self.file.fileno())
        self.file.close()

    def abandon(self) -> None:
        self.file.close()


class JsonlWriter:
    def __init__(self, path: Path, *, part: bool = False) -> None:
        self.out = _HashingFile(path, part=part)

    def write(self, record: dict[str, Any]) -> None:
        out = self.out  # _HashingFile.write, inlined: this runs for every row
        data = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        out.parts.append(data)
        out.pending += len(data)
        if out.pending >= WRITE_BLOCK:
            out.flush()

    def close(self) -> tuple[str, int]:
        self.out.close()
        return self.out.hash.hexdigest() if self.out.hash else "", self.out.size

    def abandon(self) -> None:
        self.out.abandon()


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

    def abandon(self) -> None:
        self.out.abandon()


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

    def abandon(self) -> None:
        self.writer.close()


WRITERS = {"jsonl": JsonlWriter, "csv": CsvWriter, "parquet": ParquetWriter}


class ManifestLines:
    """An export's manifest lines. A line is `{"line":N,` and its body: the record's id, step,
    item, agent, queue, reviewers, verdict, auto, split, dataset version, content hash and
    redactions (if any). A worker writes bodies; the line numbers are put in front when its
    part is joined to the export (`ExportFiles.add_part`). The run of fields from the agent to
    the dataset version repeats from line to line, so each distinct run is serialised once."""

    CACHED = 4096

    def __init__(self) -> None:
        self.middles: dict[tuple[Any, ...], bytes] = {}

    def body(self, case: Case) -> bytes:
        key = (case.agent, case.queue, tuple(case.reviewers), case.verdict, case.auto, case.split, case.version_id)
        middle = self.middles.get(key)
        if middle is None:
            middle = orjson.dumps(
                {
                    "agent": case.agent,
                    "queue": case.queue,
                    "reviewers": case.reviewers,
                    "verdict": case.verdict,
                    "auto": case.auto,
                    "split": case.split,
                    "dataset_version": case.version_id,
                }
            )[1:-1]
            if len(self.middles) < self.CACHED:
                self.middles[key] = middle
        redactions = b',"redactions":%s' % orjson.dumps(case.redactions) if case.redactions else b""
        return b'"id":"rq-step-%d","step_id":%d,"item_id":%s,%s,"content_hash":%s%s}\n' % (
            case.step_id,
            case.step_id,
            b"null" if case.item_id is None else b"%d" % case.item_id,
            middle,
            orjson.dumps(case.content_hash),
            redactions,
        )

    def line(self, line: int, case: Case) -> bytes:
        return numbered_line(line, self.body(case))


def numbered_line(line: int, body: bytes) -> bytes:
    """A manifest line from its body (`ManifestLines.body`) and its line number."""
    return _LINE_START % line + body


_LINE_START = b'{"line":%d,'  # a manifest line's start, before its body


def check_targets(out: Path, manifest: Path | None = None) -> None:
    """Raise ValueError, before anything is written, if an export could not be renamed into
    place at `out` and its manifest (default: beside it). `services.export_to_path`, which every
    export goes through, calls it before it starts (and before a parallel export forks)."""
    manifest = manifest or manifest_path_for(out)
    for path in (out, manifest):
        if path.is_dir():
            raise ValueError(f"{path} is a directory: give the path of a file to write")
    if out.resolve() == manifest.resolve():
        raise ValueError(f"the data file and the manifest are both {out}")


def temporary_path(path: Path, suffix: str = "") -> Path:
    """A hidden name beside `path` for a file being written (`remove_stale_parts` knows them)."""
    return path.with_name(f".{path.name}.part-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


# A case a worker kept, as its part's index has it: the 64-bit digest (for dedupe across
# slices), where its records and manifest lines end in the part files, and its outcome (an
# index into the part's outcome table: records, skip reason, split, verdict, redactions).
INDEX_FIELDS = 4
INDEX_BLOCK = 4096  # cases per block of index read or written
Outcome = tuple[int, str, str, str, tuple[tuple[str, int], ...]]


@dataclass
class Part:
    """The files one worker writes for its slice of an export (jsonl container only): records
    and manifest lines (without line numbers) as the export would have them, an index of its
    cases, and its counts (`result`, JSON)."""

    data: Path
    manifest: Path
    index: Path
    result: Path

    @classmethod
    def beside(cls, out: Path) -> Part:
        return cls(*(temporary_path(out, f"-{name}") for name in ("data", "manifest", "index", "result")))

    def remove(self) -> None:
        for path in (self.data, self.manifest, self.index, self.result):
            path.unlink(missing_ok=True)


class _PartIndex:
    def __init__(self, path: Path, data: _HashingFile, manifest: _HashingFile) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.data, self.manifest = data, manifest
        self.entries = array("Q")
        self.outcomes: dict[Outcome, int] = {}

    def add(self, digest: int, outcome: Outcome) -> None:
        number = self.outcomes.get(outcome)
        if number is None:
            number = self.outcomes[outcome] = len(self.outcomes)
        data, manifest = self.data, self.manifest
        self.entries.extend((digest, data.size + data.pending, manifest.size + manifest.pending, number))
        if len(self.entries) >= INDEX_FIELDS * INDEX_BLOCK:
            self.flush()

    def flush(self) -> None:
        self.entries.tofile(self.file)
        del self.entries[:]

    def close(self) -> None:
        self.flush()
        self.file.close()

    def abandon(self) -> None:
        self.file.close()


class ExportFiles:
    """The files of one export while cases are added: the data file and its manifest under
    temporary names, renamed into place by `finish` (the data file last), or, for a worker of
    a parallel export (`part`), its part files. `discard` removes what was written."""

    def __init__(
        self,
        *,
        fmt: Format,
        out: Path,
        manifest: Path | None = None,
        dedupe: bool = True,
        ctx: ExportContext | None = None,
        progress: Callable[[int, int], None] | None = None,
        part: Part | None = None,
    ) -> None:
        out = Path(out)
        manifest = Path(manifest) if manifest else manifest_path_for(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        manifest.parent.mkdir(parents=True, exist_ok=True)
        self.fmt, self.progress, self.part = fmt, progress, part
        self.ctx = ctx or ExportContext(out_dir=out.parent)
        self.result = ExportResult(path=out, manifest=manifest)
        # A part is deduplicated when it is appended (`add_part`), which sees every slice's
        # digests: the worker writing it only records them in its index.
        self.seen = SeenDigests() if dedupe and part is None else None
        self.manifest_lines = ManifestLines()
        self.index: _PartIndex | None = None
        if part is None:
            self.data_path, self.manifest_path = temporary_path(out), temporary_path(manifest)
            self.writer = WRITERS[fmt.container](self.data_path)
            self.manifest_out = _HashingFile(self.manifest_path, hashed=False)  # the data's hash is the export's
        else:
            if fmt.container != "jsonl" or not dedupe:
                raise ValueError("parts are for deduplicated jsonl exports")
            self.data_path, self.manifest_path = part.data, part.manifest
            self.writer = JsonlWriter(part.data, part=True)
            self.manifest_out = _HashingFile(part.manifest, part=True)
            self.index = _PartIndex(part.index, self.writer.out, self.manifest_out)

    def add_cases(self, cases: Iterable[Case], *, split: str = "all") -> None:
        """Write the records of `cases` (in order); `split` keeps only the train or test side.
        A case whose content hash was already written is dropped (with dedupe)."""
        result, ctx, progress, seen, index = self.result, self.ctx, self.progress, self.seen, self.index
        records_fn, write, write_manifest = self.fmt.records, self.writer.write, self.manifest_out.write
        skipped, splits, verdicts, redactions = result.skipped, result.splits, result.verdicts, result.redactions
        numbered = index is None
        manifest_line, manifest_body = self.manifest_lines.line, self.manifest_lines.body
        cases_read, rows, duplicates = result.cases_read, result.rows, result.duplicates_removed
        digest = 0
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
                    if seen is not None or index is not None:
                        digest = int(case.content_hash[:16], 16)
                        if seen is not None and not seen.add(digest):
                            duplicates += 1
                            continue
                    produced = records_fn(case, ctx)
                    if type(produced) is str:
                        skipped[produced] += 1
                        if index is not None:
                            index.add(digest, (0, produced, "", "", ()))
                        continue
                    for record in produced:
                        write(record)
                        rows += 1
                        write_manifest(manifest_line(rows, case) if numbered else manifest_body(case))
                    splits[case.split] += 1
                    verdicts[case.verdict] += 1
                    if case.redactions:
                        redactions.update(case.redactions)
                    if index is not None:
                        found = tuple(case.redactions.items()) if case.redactions else ()
                        index.add(digest, (len(produced), "", case.split, case.verdict, found))
            finally:
                if gc_was_enabled:
                    gc.enable()
                result.cases_read, result.rows, result.duplicates_removed = cases_read, rows, duplicates
        finally:
            close = getattr(cases, "close", None)
            if close is not None:  # a generator: stop its reader (and cursor) now, also on errors
                close()

    def close_part(self) -> dict[str, Any]:
        """A worker's end: close its part files and give its counts and outcome table."""
        assert self.index is not None
        self.writer.close()
        self.manifest_out.close()
        self.index.close()
        result = self.result
        return {
            "cases_read": result.cases_read,
            "rows": result.rows,
            "duplicates": result.duplicates_removed,
            "skipped": result.skipped,
            "splits": result.splits,
            "verdicts": result.verdicts,
            "redactions": result.redactions,
            "outcomes": list(self.index.outcomes),
        }

    def add_part(self, part: Part, counts: dict[str, Any]) -> None:
        """Append a worker's part, written from the slice of steps after those already added:
        its records and manifest lines (numbered on from here), except the cases whose
        content hash an earlier slice already wrote, and its counts (less those cases')."""
        result, seen = self.result, self.seen
        assert seen is not None and self.fmt.container == "jsonl"
        result.cases_read += counts["cases_read"]
        result.duplicates_removed += counts["duplicates"]
        for name in ("skipped", "splits", "verdicts", "redactions"):
            getattr(result, name).update(counts[name])
        outcomes = [(n, reason, split, verdict, dict(found)) for n, reason, split, verdict, found in counts["outcomes"]]
        entries = array("Q")
        with open(part.index, "rb") as index, open(part.data, "rb") as data, open(part.manifest, "rb") as manifest:
            data_at = manifest_at = 0  # ends of the last case read from the index
            while True:
                del entries[:]
                try:
                    entries.fromfile(index, INDEX_FIELDS * INDEX_BLOCK)
                except EOFError:  # the last, shorter block (fromfile keeps what it read)
                    if not entries:
                        break
                data_from, manifest_from = data_at, manifest_at  # the run of kept cases
                for at in range(0, len(entries), INDEX_FIELDS):
                    digest, data_end, manifest_end, number = entries[at : at + INDEX_FIELDS]
                    if not seen.add(digest):  # an earlier slice wrote it: leave it out
                        self._copy_run(data, manifest, data_from, data_at, manifest_from, manifest_at)
                        data_from, manifest_from = data_end, manifest_end
                        self._uncount(outcomes[number])
                    data_at, manifest_at = data_end, manifest_end
                self._copy_run(data, manifest, data_from, data_at, manifest_from, manifest_at)
                if self.progress is not None:
                    self.progress(result.cases_read, result.rows)

    def _copy_run(self, data: Any, manifest: Any, data_from: int, data_to: int, lines_from: int, lines_to: int) -> None:
        if data_to > data_from:
            data.seek(data_from)
            left = data_to - data_from
            while left:
                block = data.read(min(left, WRITE_BLOCK))
                self.writer.out.write(block)
                left -= len(block)
        if lines_to > lines_from:
            manifest.seek(lines_from)
            lines = manifest.read(lines_to - lines_from).split(b"\n")
            lines.pop()  # after the last newline
            first = self.result.rows + 1
            starts = map(_LINE_START.__mod__, range(first, first + len(lines)))
            self.manifest_out.write(b"\n".join(map(bytes.__add__, starts, lines)) + b"\n")
            self.result.rows += len(lines)

    def _uncount(self, outcome: tuple[int, str, str, str, dict[str, int]]) -> None:
        """Take a case left out of a part back out of the counts its worker gave."""
        result = self.result
        result.duplicates_removed += 1
        records, reason, split, verdict, found = outcome
        if reason:
            _decrement(result.skipped, reason)
            return
        _decrement(result.splits, split)
        _decrement(result.verdicts, verdict)
        for kind, count in found.items():
            _decrement(result.redactions, kind, count)

    def finish(self) -> ExportResult:
        """Close the files, write the manifest's summary and rename both into place."""
        result, fmt = self.result, self.fmt
        result.sha256, result.size_bytes = self.writer.close()
        if result.rows < fmt.min_records:
            result.warnings.append(
                f"{fmt.name} needs at least {fmt.min_records} example{'s' if fmt.min_records != 1 else ''} per file;"
                f" this one has {result.rows}"
            )
        self.manifest_out.write(orjson.dumps({"summary": result.summary(fmt)}, option=orjson.OPT_APPEND_NEWLINE))
        self.manifest_out.close()
        os.replace(self.manifest_path, result.manifest)
        os.replace(self.data_path, result.path)
        return result

    def discard(self) -> None:
        for opened in (self.writer, self.manifest_out, self.index):
            if opened is not None:
                with contextlib.suppress(Exception):  # best effort: the files go anyway
                    opened.abandon()
        self.data_path.unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)
        if self.part is not None:
            self.part.remove()


def _decrement(counter: Counter[str], key: str, by: int = 1) -> None:
    counter[key] -= by
    if counter[key] <= 0:
        del counter[key]


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
    try:
        files = ExportFiles(fmt=fmt, out=out, manifest=manifest, dedupe=dedupe, ctx=ctx, progress=progress)
    except BaseException:
        close = getattr(cases, "close", None)
        if close is not None:
            close()
        raise
    try:
        files.add_cases(cases, split=split)
        result = files.finish()
    except BaseException:
        files.discard()
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
