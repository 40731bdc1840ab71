"""Ad-hoc exports on several cores (PostgreSQL).

An export's per-row work (parsing, normalising, the format's records, the redaction check,
serialising) is Python and holds the GIL: one process uses one core. So an export of the steps
a filter chooses is split into contiguous slices of step ids, equal ranges of ids, one per
process (`EXPORT_WORKERS`; by default the number of CPUs plus one, see `worker_count`). The
export's own process writes the first slice straight into the export's files, as a serial
export does; each other slice is exported by a forked worker process into part files
(`exporting.Part`). When its own slice is done, the process appends the parts in order
(`ExportFiles.add_part`): records and manifest lines are copied, line numbers run on, and a
case whose content hash an earlier slice wrote is left out, so the files are byte for byte
those of a serial export. All processes read one snapshot (the parent's REPEATABLE READ
transaction, shared with `pg_export_snapshot()`), so the slices see the data one query would.
Each process reads its cursor in its own thread (`read_ahead=False`): the other processes keep
the cores busy while one waits on PostgreSQL.

Used on PostgreSQL without a connection pool (DB_POOL), for formats written as JSON lines,
outside a transaction (the workers see only committed data) and with at least
MIN_STEPS_PER_WORKER step ids a worker; otherwise the export is serial. On any error the
workers are killed and every part file removed; a worker whose parent has died removes its
files and exits."""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import signal
import struct
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, connections, transaction

from evals import selectors
from evals.exporting import ExportFiles, ExportResult, Part, write_export
from evals.formats import ExportContext, Format
from evals.redaction import Redactor

MIN_STEPS_PER_WORKER = 10_000
_SLOT = struct.Struct("qq")  # a worker's progress in shared memory: cases read, rows written
_SNAPSHOT = re.compile(r"[0-9A-Fa-f-]+")
# A worker keeps the database connections it inherited referenced and never closes them:
# closing would end the parent's sessions, whose sockets they share.
_INHERITED: list[Any] = []

Progress = Callable[[int, int], None]


class ExportWorkerError(RuntimeError):
    pass


def worker_count() -> int:
    """EXPORT_WORKERS, or by default one process more than the CPUs: each process also waits on
    PostgreSQL (and PostgreSQL needs the CPUs too), so one more keeps them busy."""
    return max(1, int(getattr(settings, "EXPORT_WORKERS", 0) or (os.cpu_count() or 1) + 1))


def usable(fmt: Format, workers: int) -> bool:
    """Whether an ad-hoc export in `fmt` may run on `workers` processes here and now."""
    return (
        workers > 1
        and fmt.container == "jsonl"
        and connection.vendor == "postgresql"
        and not connection.in_atomic_block
        # A forked worker must not take connections from the pool it inherited (the parent's).
        and not connection.settings_dict.get("OPTIONS", {}).get("pool")
        and hasattr(os, "fork")
    )


@dataclass
class _Worker:
    slot: int
    pid: int
    part: Part
    merged: bool = False
    reaped: bool = False


def export_steps(
    *,
    fmt: Format,
    out: Path,
    manifest: Path | None,
    filters: dict[str, Any],
    split: str,
    redactor: Redactor | None,
    ctx: ExportContext,
    progress: Progress | None,
    workers: int,
) -> ExportResult:
    """`write_export` of `step_cases(filters)`, on up to `workers` processes (see the module)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
        starts = _slice_starts(filters, workers)
        if not starts:
            cases = selectors.step_cases(filters=filters, redactor=redactor)
            return write_export(
                cases=cases, fmt=fmt, out=out, manifest=manifest, split=split, ctx=ctx, progress=progress
            )
        bounds = [None, *starts, None]
        slices = list(zip(bounds[:-1], bounds[1:], strict=True))
        parent = os.getpid()
        shared = mmap.mmap(-1, _SLOT.size * len(starts))
        running: list[_Worker] = []

        def report(cases_read: int, rows: int) -> None:  # ours plus the workers' not yet merged
            assert progress is not None
            for worker in running:
                if not worker.merged:
                    theirs = _SLOT.unpack_from(shared, _SLOT.size * worker.slot)
                    cases_read, rows = cases_read + theirs[0], rows + theirs[1]
            progress(cases_read, rows)

        def run_slice(worker: _Worker, ids: tuple[int | None, int | None]) -> None:
            def own_progress(cases_read: int, rows: int) -> None:
                _SLOT.pack_into(shared, _SLOT.size * worker.slot, cases_read, rows)
                if os.getppid() != parent:  # the export was killed: leave nothing behind
                    worker.part.remove()
                    os._exit(1)

            files = ExportFiles(fmt=fmt, out=out, manifest=manifest, ctx=ctx, progress=own_progress, part=worker.part)
            try:
                files.add_cases(
                    selectors.step_cases(filters=filters, redactor=redactor, ids=ids, read_ahead=False), split=split
                )
                counts = files.close_part()
            except BaseException:
                files.discard()
                raise
            counts.update(pid=os.getpid(), peak_rss_kib=rss_kib("VmHWM"))
            worker.part.result.write_bytes(orjson.dumps(counts))

        files: ExportFiles | None = None
        found: list[dict[str, int]] = []
        try:
            for slot, ids in enumerate(slices[1:]):
                worker = _Worker(slot, 0, Part.beside(Path(out)))
                worker.pid = _fork(worker, lambda worker=worker, ids=ids: run_slice(worker, ids), snapshot)
                running.append(worker)
            files = ExportFiles(fmt=fmt, out=out, manifest=manifest, ctx=ctx, progress=report if progress else None)
            files.add_cases(
                selectors.step_cases(filters=filters, redactor=redactor, ids=slices[0], read_ahead=False), split=split
            )
            for worker in running:
                counts = _wait(worker)
                worker.merged = True
                files.add_part(worker.part, counts)
                worker.part.remove()
                found.append({key: counts[key] for key in ("pid", "cases_read", "peak_rss_kib")})
            result = files.finish()
        except BaseException:
            _kill(running)
            if files is not None:
                files.discard()
            raise
        finally:
            for worker in running:
                worker.part.remove()
            shared.close()
    result.workers = found
    if progress is not None:
        progress(result.cases_read, result.rows)
    return result


def _slice_starts(filters: dict[str, Any], workers: int) -> list[int]:
    """The first step id of each slice after the first: the ids from the first chosen step to
    the last cut into equal ranges (two index lookups; counting the chosen steps to cut them
    into equal counts takes a scan of them all). Ids follow arrival, so the chosen steps are
    spread about evenly over them for the usual filters (everything, a time range, an agent
    or a queue among others); an uneven spread costs speed, never correctness."""
    ids = selectors.decided_steps(filters=filters).values_list("id", flat=True)
    first, last = ids.first(), ids.last()
    if first is None or last is None:
        return []
    span = last - first + 1
    parts = min(workers, span // MIN_STEPS_PER_WORKER)
    return [first + span * k // parts for k in range(1, parts)] if parts > 1 else []


def _fork(worker: _Worker, run: Callable[[], None], snapshot: str) -> int:
    """Start a worker process running `run` in a transaction on `snapshot`; its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the worker: it never returns from here
        _reconnect()
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                if not _SNAPSHOT.fullmatch(snapshot):
                    raise ValueError(f"unexpected snapshot id {snapshot!r}")
                cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            run()
        connection.close()
        code = 0
    except BaseException:  # reported to the parent through the result file
        with contextlib.suppress(BaseException):
            worker.part.result.write_bytes(orjson.dumps({"error": traceback.format_exc()[-4000:]}))
    finally:
        os._exit(code)


def _reconnect() -> None:
    """In a new worker: forget the parent's connections (see _INHERITED); new ones open on use."""
    for alias in connections:
        _INHERITED.append(connections[alias])
        connections[alias] = connections.create_connection(alias)


def _wait(worker: _Worker) -> dict[str, Any]:
    _, status = os.waitpid(worker.pid, 0)
    worker.reaped = True
    try:
        counts = orjson.loads(worker.part.result.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        counts = {"error": f"exit status {status}, no result"}
    if "error" in counts or status != 0:
        raise ExportWorkerError(f"export worker {worker.slot + 1} failed: {counts.get('error', status)}")
    return counts


def _kill(running: list[_Worker]) -> None:
    for worker in running:
        if worker.pid and not worker.reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(worker.pid, 0)
            worker.reaped = True


def rss_kib(field: str, pid: int | str = "self") -> int:
    """A memory figure of a process (`VmRSS`, `VmHWM`) from /proc, in KiB; 0 once it has ended."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0
