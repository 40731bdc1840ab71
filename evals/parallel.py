"""Ad-hoc exports on several cores (PostgreSQL).

An export's per-row work (parsing, normalising, the format's records, the redaction check,
serialising) is Python and holds the GIL: one process uses one core. So an export of the steps
a filter chooses is cut into contiguous slices of step ids (equal ranges of ids, several per
process: `SLICES_PER_WORKER`), exported by forked worker processes (`EXPORT_WORKERS`; by default
the number of CPUs plus one, see `worker_count`). Each worker takes the next slice not yet
taken (from a pipe the slice numbers were written into), exports it into part files
(`exporting.Part`) and says so on a second pipe. The export's own process appends each part to
the export's files as soon as it and every slice before it are done (`ExportFiles.add_part`):
records and manifest lines are copied, line numbers run on, and a case whose content hash an
earlier slice wrote is left out, so the files are byte for byte those of a serial export. As
the slices are small and taken in order, the appending keeps pace with the workers, and little
is left to append once the last slice is done. All processes read one snapshot (the parent's
REPEATABLE READ transaction, shared with `pg_export_snapshot()`), so the slices see the data
one query would. Each worker reads its cursor in its own thread (`read_ahead=False`): the other
processes keep the cores busy while one waits on PostgreSQL. A worker with no slice left waits
until the parent has appended its parts (or has died) before it exits.

Used on PostgreSQL without a connection pool (DB_POOL), for formats written as JSON lines,
outside a transaction (the workers see only committed data) and with at least
MIN_STEPS_PER_SLICE step ids a slice and two slices; otherwise the export is serial. On any
error the workers are killed and every part file removed; a worker whose parent has died
removes its files and exits."""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import select
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
from evals.exporting import ExportFiles, ExportResult, Part, temporary_path, write_export
from evals.formats import ExportContext, Format
from evals.redaction import Redactor, load_triggers

MIN_STEPS_PER_SLICE = 10_000
MAX_SLICES = 4096  # their numbers must fit in a pipe's buffer (64 KiB on Linux): 16 KiB
SLICES_PER_WORKER = 8  # more, smaller slices: less left to append after the last one ends
WAIT_SECONDS = 0.5  # how often the parent looks at its workers (and reports progress) at least
_SLOT = struct.Struct("qq")  # a slice's progress in shared memory: cases read, rows written
_NUMBER = struct.Struct("I")  # a slice number on the pipes (writes this small are atomic)
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
    """A worker process as the parent sees it; `error` is where it writes why it failed."""

    pid: int
    error: Path
    reaped: bool = False
    cases_read: int = 0
    peak_rss_kib: int = 0


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
        parts = [Part.beside(Path(out)) for _ in slices]
        if redactor is not None:
            load_triggers()
        shared = mmap.mmap(-1, _SLOT.size * len(slices))
        todo, todo_in = os.pipe()
        done, done_in = os.pipe()
        held, hold = os.pipe()  # the parent holds `hold` open until it has appended every part
        os.write(todo_in, b"".join(_NUMBER.pack(number) for number in range(len(slices))))
        os.close(todo_in)  # a worker that reads nothing more is done
        parent = os.getpid()

        def run_slices() -> None:
            mine: list[Part] = []  # the parts this worker wrote: gone with it if the parent dies

            def alone() -> bool:
                if os.getppid() == parent:
                    return False
                for part in mine:
                    part.remove()
                return True

            os.close(hold)  # this worker's copy: only the parent's may keep `held` from its end
            while (number := os.read(todo, _NUMBER.size)) and not alone():
                slot = _NUMBER.unpack(number)[0]
                part = parts[slot]
                mine.append(part)

                def own_progress(cases_read: int, rows: int, slot: int = slot) -> None:
                    _SLOT.pack_into(shared, _SLOT.size * slot, cases_read, rows)
                    if alone():  # the export was killed: leave nothing behind
                        os._exit(1)

                files = ExportFiles(fmt=fmt, out=out, manifest=manifest, ctx=ctx, progress=own_progress, part=part)
                try:
                    cases = selectors.step_cases(filters=filters, redactor=redactor, ids=slices[slot], read_ahead=False)
                    files.add_cases(cases, split=split)
                    counts = files.close_part()
                except BaseException:
                    files.discard()
                    raise
                counts.update(pid=os.getpid(), peak_rss_kib=rss_kib("VmHWM"))
                part.result.write_bytes(orjson.dumps(counts))
                os.write(done_in, number)
            # No slice left: stay until the parent has appended this worker's parts (it closes
            # `hold`, having removed them) or has died (the kernel closes it, maybe before this
            # worker has a new parent), and then leave nothing behind.
            os.read(held, 1)
            for part in mine:
                part.remove()

        running: list[_Worker] = []
        files: ExportFiles | None = None
        try:
            for _ in range(min(workers, len(slices))):
                error = temporary_path(Path(out), "-error")
                running.append(_Worker(_fork(run_slices, snapshot, error), error))
            os.close(done_in)
            done_in = -1
            files = ExportFiles(fmt=fmt, out=out, manifest=manifest, ctx=ctx)
            _append_in_order(files, parts, done, running, shared, progress)
            os.close(hold)  # every part is appended: the workers may go
            hold = -1
            for worker in running:
                _reap(worker, block=True)
            result = files.finish()
        except BaseException:
            _kill(running)
            if files is not None:
                files.discard()
            raise
        finally:
            for fd in (todo, done, done_in, held, hold):
                if fd >= 0:
                    os.close(fd)
            for part in parts:
                part.remove()
            for worker in running:
                worker.error.unlink(missing_ok=True)
            shared.close()
    result.workers = [{"pid": w.pid, "cases_read": w.cases_read, "peak_rss_kib": w.peak_rss_kib} for w in running]
    if progress is not None:
        progress(result.cases_read, result.rows)
    return result


def _append_in_order(
    files: ExportFiles,
    parts: list[Part],
    done: int,
    running: list[_Worker],
    shared: mmap.mmap,
    progress: Progress | None,
) -> None:
    """Append the parts to `files` in slice order, each as soon as it and those before it are
    done; fails as soon as a worker does."""
    finished: set[int] = set()
    by_pid = {worker.pid: worker for worker in running}
    appended = 0
    while appended < len(parts):
        readable, _, _ = select.select([done], [], [], WAIT_SECONDS)
        if readable:
            told = os.read(done, _NUMBER.size * len(parts))
            finished.update(number for (number,) in _NUMBER.iter_unpack(told))
        for worker in running:  # a worker that failed (or was killed) fails the export now
            _reap(worker, block=False)
        while appended in finished:
            counts = orjson.loads(parts[appended].result.read_bytes())
            files.add_part(parts[appended], counts)
            parts[appended].remove()
            worker = by_pid.get(counts["pid"])
            if worker is not None:
                worker.cases_read += counts["cases_read"]
                worker.peak_rss_kib = max(worker.peak_rss_kib, counts["peak_rss_kib"])
            appended += 1
        if readable and not told and appended < len(parts):  # every worker has gone
            raise ExportWorkerError(f"the export's workers ended with {len(parts) - appended} slices not done")
        if progress is not None:
            cases_read, rows = files.result.cases_read, files.result.rows
            for number in range(appended, len(parts)):
                theirs = _SLOT.unpack_from(shared, _SLOT.size * number)
                cases_read, rows = cases_read + theirs[0], rows + theirs[1]
            progress(cases_read, rows)


def _slice_starts(filters: dict[str, Any], workers: int) -> list[int]:
    """The first step id of each slice after the first: the ids from the first chosen step to
    the last cut into equal ranges (two index lookups; counting the chosen steps to cut them
    into equal counts takes a scan of them all), SLICES_PER_WORKER a worker and at least
    MIN_STEPS_PER_SLICE ids each. Ids follow arrival, so the chosen steps are spread about
    evenly over them for the usual filters (everything, a time range, an agent or a queue
    among others); an uneven spread costs speed, never correctness."""
    ids = selectors.decided_steps(filters=filters).values_list("id", flat=True)
    first, last = ids.first(), ids.last()
    if first is None or last is None:
        return []
    span = last - first + 1
    parts = min(workers * SLICES_PER_WORKER, span // MIN_STEPS_PER_SLICE, MAX_SLICES)
    return [first + span * k // parts for k in range(1, parts)] if parts > 1 else []


def _fork(run: Callable[[], None], snapshot: str, error: Path) -> int:
    """Start a worker process running `run` in a transaction on `snapshot`; its pid. A worker
    that fails writes why to `error` and exits with status 1."""
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
    except BaseException:  # reported to the parent through the error file
        with contextlib.suppress(BaseException):
            error.write_text(traceback.format_exc()[-4000:])
    finally:
        os._exit(code)


def _reconnect() -> None:
    """In a new worker: forget the parent's connections (see _INHERITED); new ones open on use."""
    for alias in connections:
        _INHERITED.append(connections[alias])
        connections[alias] = connections.create_connection(alias)


def _reap(worker: _Worker, *, block: bool) -> None:
    """Collect a worker that has ended (waiting for it with `block`); raise if it failed."""
    if worker.reaped:
        return
    pid, status = os.waitpid(worker.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return
    worker.reaped = True
    if status != 0:
        try:
            why = worker.error.read_text()
        except OSError:
            why = f"exit status {status}"
        raise ExportWorkerError(f"export worker {worker.pid} failed: {why}")


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
