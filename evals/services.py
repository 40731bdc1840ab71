"""Writes for datasets: save a dataset, freeze a version, start and run an export.

The CLI, the API, the UI and the django-q2 task all call these, so each exists once."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Count, Max
from django.utils import timezone

from evals import parallel, selectors
from evals.exporting import ExportResult, check_targets, manifest_path_for, remove_stale_parts, write_export
from evals.formats import ExportContext, get_format
from evals.models import Dataset, DatasetVersion, EvalCase, Export, ExportStatus, VersionStatus
from evals.redaction import RedactionError, Redactor, validate_patterns
from reviewqueue.core import audit, rows
from reviewqueue.review.models import Decision

logger = logging.getLogger(__name__)

FREEZE_BATCH = 1000
PROGRESS_EVERY = 1000
FREEZE_LOCK_CLASS = 0x5251  # advisory lock namespace of freezes ("RQ")
SPLITS = ("train", "test", "all")
# A running export whose progress has not moved for this long is taken to be dead (worker killed).
STALE_AFTER = timedelta(seconds=60)


class DatasetError(ValueError):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))


def export_root() -> Path:
    return Path(getattr(settings, "EXPORT_ROOT", Path(settings.MEDIA_ROOT).parent / "exports"))


def export_directory(export_id: int) -> Path:
    """Where an export's files are (under EXPORT_ROOT): its data file, manifest and images."""
    return export_root() / str(export_id)


DATASET_FIELDS = ("name", "description", "filters", "test_ratio", "redact", "redaction_patterns")


def _clean_dataset_data(data: dict[str, Any], dataset: Dataset | None) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    for key in data:
        if key not in DATASET_FIELDS:
            errors[str(key)] = [f"unknown field; expected: {', '.join(DATASET_FIELDS)}"]
    if dataset is None or "name" in data:
        name = data.get("name")
        if not isinstance(name, str) or not name or len(name) > 100 or not all(c.isalnum() or c in "-_" for c in name):
            errors["name"] = ["required: letters, digits, - and _ (at most 100)"]
        elif Dataset.objects.filter(name=name).exclude(pk=getattr(dataset, "pk", None)).exists():
            errors["name"] = [f"a dataset named {name!r} already exists"]
        else:
            clean["name"] = name
    if "description" in data:
        clean["description"] = str(data.get("description") or "")
    if "filters" in data:
        try:
            clean["filters"] = selectors.clean_filters(data["filters"])
        except selectors.FilterError as exc:
            errors.update({f"filters.{k}" if k != "filters" else k: v for k, v in exc.errors.items()})
    if "test_ratio" in data:
        ratio = data["test_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            errors["test_ratio"] = ["must be a number between 0 and 1"]
        else:
            clean["test_ratio"] = float(ratio)
    if "redact" in data:
        if not isinstance(data["redact"], bool):
            errors["redact"] = ["must be true or false"]
        else:
            clean["redact"] = data["redact"]
    if "redaction_patterns" in data:
        try:
            clean["redaction_patterns"] = validate_patterns(data["redaction_patterns"])
        except RedactionError as exc:
            errors["redaction_patterns"] = [str(exc)]
    if errors:
        raise DatasetError(errors)
    return clean


def save_dataset(*, data: dict[str, Any], actor: Any = None, dataset: Dataset | None = None) -> Dataset:
    """Create (dataset None) or update a dataset; DatasetError names the bad fields."""
    if not isinstance(data, dict):
        raise DatasetError({"body": ["must be a JSON object"]})
    clean = _clean_dataset_data(data, dataset)
    with transaction.atomic():
        if dataset is None:
            dataset = Dataset.objects.create(created_by=actor if getattr(actor, "pk", None) else None, **clean)
            audit.record("dataset.created", dataset, actor=actor, after={"name": dataset.name, **clean})
        else:
            for key, value in clean.items():
                setattr(dataset, key, value)
            dataset.updated_at = timezone.now()
            dataset.save()
            audit.record("dataset.updated", dataset, actor=actor, after=clean)
    return dataset


def delete_dataset(*, dataset: Dataset, actor: Any = None) -> None:
    """Delete a dataset with its versions and their exports; the exports' files are removed
    once the deletion commits (`evals.receivers`). Decisions stay locked against amendment
    (`Decision.exported_at`): a deleted version may still be in someone's training run."""
    with transaction.atomic():
        before = {
            "name": dataset.name,
            "versions": dataset.versions.count(),
            "exports": Export.objects.filter(version__dataset=dataset).count(),
        }
        audit.record("dataset.deleted", dataset, actor=actor, before=before)
        dataset.delete()


def redactor_for(dataset: Dataset | None) -> Redactor | None:
    if dataset is None:
        return Redactor()
    return Redactor(dataset.redaction_patterns) if dataset.redact else None


def lock_exported_decisions(version: DatasetVersion, now: Any) -> int:
    """Set Decision.exported_at on the version's steps: an exported decision can no longer be
    amended (review.services.amend_review refuses it)."""
    steps = EvalCase.objects.filter(version=version, step__isnull=False).values("step_id")
    return Decision.objects.filter(step_id__in=steps, exported_at__isnull=True).update(exported_at=now)


def freeze_version(*, dataset: Dataset, actor: Any = None) -> DatasetVersion:
    """Freeze a new version now, in this process (the CLI's `--freeze`, tests, the demo data)."""
    version = start_freeze(dataset=dataset, actor=actor, enqueue=False)
    run_freeze(version_id=version.pk)
    version.refresh_from_db()
    return version


def start_freeze(*, dataset: Dataset, actor: Any = None, enqueue: bool = True) -> DatasetVersion:
    """Reserve the dataset's next version number as a `freezing` version and queue the
    django-q2 task that fills it (`run_freeze`)."""
    with transaction.atomic():
        locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
        number = (locked.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = DatasetVersion.objects.create(
            dataset=locked,
            number=number,
            filters=locked.filters,
            test_ratio=locked.test_ratio,
            content_hash="",
            status=VersionStatus.FREEZING,
            created_by=actor if getattr(actor, "pk", None) else None,
        )
        audit.record("dataset.freeze_started", version, actor=actor, after={"dataset": locked.name, "number": number})
        if enqueue:
            from django_q.tasks import async_task

            timeout = int(getattr(settings, "EXPORT_TASK_TIMEOUT", 3600))
            task = {"task_name": f"freeze-{version.pk}", "timeout": timeout}
            transaction.on_commit(lambda: async_task("evals.tasks.run_freeze", version.pk, **task))
    return version


def version_problem(version: DatasetVersion) -> str:
    """What to do about a version that cannot be exported yet."""
    if version.status == VersionStatus.FAILED:
        return f"freezing failed ({version.error or 'unknown error'}); freeze a new version"
    return "wait until it has been frozen"


def latest_ready_version(dataset: Dataset) -> DatasetVersion | None:
    return dataset.versions.filter(status=VersionStatus.READY).order_by("-number").first()


def _try_lock_version(version_id: int) -> bool:
    """Whether this transaction now holds the version's freeze lock (PostgreSQL: an advisory
    lock released at commit or when a killed worker's connection closes; SQLite serialises
    writers itself)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [FREEZE_LOCK_CLASS, version_id])
        return bool(cursor.fetchone()[0])


def write_version_progress(db: Any, version_id: int, cases_done: int, cases_total: int | None = None) -> None:
    """Record a freeze's progress through `db` (see `side_connection`); `cases_total` once, at the start."""
    table = DatasetVersion._meta.db_table
    with db.cursor() as cursor:
        if cases_total is None:
            cursor.execute(f"UPDATE {table} SET cases_done = %s WHERE id = %s", [cases_done, version_id])
        else:
            cursor.execute(
                f"UPDATE {table} SET cases_done = %s, cases_total = %s WHERE id = %s",
                [cases_done, cases_total, version_id],
            )


def run_freeze(*, version_id: int) -> DatasetVersion | None:
    """Fill a `freezing` version with the cases its filter chooses now, in one transaction:
    content-hashed, exact duplicates removed and counted, counts per verdict, kind and split;
    then it is `ready`. None when there is nothing to do: the version is ready or failed, or
    another live attempt holds it. A killed worker's attempt rolls back entirely, and
    django-q2's retry starts again; an error marks the version failed (no cases kept)."""
    try:
        with transaction.atomic():
            version = DatasetVersion.objects.select_related("dataset").filter(pk=version_id).first()
            if version is None or version.status != VersionStatus.FREEZING or not _try_lock_version(version_id):
                return None
            total = selectors.decided_steps(filters=version.filters).count()
            with side_connection() as side:  # not this transaction: it would lock the row the side writes
                write_version_progress(side, version_id, 0, total)
                _fill_version(version, progress=lambda done: write_version_progress(side, version_id, done))
    except Exception as exc:
        logger.exception("freezing version %s failed", version_id)
        DatasetVersion.objects.filter(pk=version_id, status=VersionStatus.FREEZING).update(
            status=VersionStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        raise
    return version


def _fill_version(version: DatasetVersion, *, progress: Callable[[int], None]) -> None:
    now = timezone.now()
    seen = 0
    batch: list[EvalCase] = []
    hashes: set[bytes] = set()  # exact duplicates: the first one stays (digests, not cases, in memory)
    for case in selectors.step_cases(filters=version.filters, test_ratio=version.test_ratio):
        seen += 1
        if seen % PROGRESS_EVERY == 0:
            progress(seen)
        digest_bytes = bytes.fromhex(case.content_hash)
        if digest_bytes in hashes:
            continue
        hashes.add(digest_bytes)
        batch.append(
            EvalCase(
                version=version,
                position=seen,
                step_id=case.step_id,
                step_ref=case.step_id,
                item_ref=case.item_id,
                agent=case.agent,
                queue=case.queue,
                kind=case.kind,
                name=case.name,
                messages=case.messages,
                tools=case.tools,
                expected=case.expected,
                rejected=case.rejected,
                verdict=case.verdict,
                auto=case.auto,
                reason=case.reason,
                labels=case.labels,
                reviewers=case.reviewers,
                tags=case.tags,
                attachments=case.attachments,
                confidence=case.confidence,
                decided_at=case.decided,
                split=case.split,
                content_hash=case.content_hash,
            )
        )
        if len(batch) >= FREEZE_BATCH:
            rows.load_many(batch)
            batch = []
    rows.load_many(batch)
    cases = EvalCase.objects.filter(version=version)
    digest = hashlib.sha256()
    for value in cases.order_by("position").values_list("content_hash", flat=True).iterator(chunk_size=5000):
        digest.update(value.encode())
    version.content_hash = digest.hexdigest()
    version.case_count = cases.count()
    version.duplicates_removed = seen - version.case_count
    version.counts = {
        key: dict(cases.order_by().values_list(key).annotate(n=Count("*")).values_list(key, "n"))
        for key in ("verdict", "kind", "split")
    }
    version.status = VersionStatus.READY
    version.cases_done = seen
    version.frozen_at = now
    version.save()
    lock_exported_decisions(version, now)
    audit.record(
        "dataset.frozen",
        version,
        actor=version.created_by,
        after={
            "dataset": version.dataset.name,
            "number": version.number,
            "cases": version.case_count,
            "hash": version.content_hash,
        },
    )


def export_to_path(
    *,
    fmt_name: str,
    out: Path,
    version: DatasetVersion | None = None,
    filters: dict[str, Any] | None = None,
    split: str = "all",
    redact: bool = True,
    manifest: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> ExportResult:
    """Export a version, or the steps an ad-hoc filter chooses (default redaction, 10% test).
    An ad-hoc export may run on `workers` processes (default EXPORT_WORKERS: evals/parallel.py)
    and writes the same bytes as on one."""
    fmt = get_format(fmt_name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    check_targets(Path(out), Path(manifest) if manifest else None)
    if version is not None:
        # The dataset's current redaction settings (they may change after the freeze).
        redactor = redactor_for(Dataset.objects.get(pk=version.dataset_id)) if redact else None
        cases = selectors.version_cases(version=version, split=split, redactor=redactor)
        dedupe = False
    else:
        redactor = Redactor() if redact else None
        clean = selectors.clean_filters(filters or {})
        workers = parallel.worker_count() if workers is None else workers
        if parallel.usable(fmt, workers):
            return parallel.export_steps(
                fmt=fmt,
                out=Path(out),
                manifest=manifest,
                filters=clean,
                split=split,
                redactor=redactor,
                ctx=ExportContext(out_dir=Path(out).parent),
                progress=progress,
                workers=workers,
            )
        cases = selectors.step_cases(filters=clean, redactor=redactor)
        dedupe = True
    return write_export(
        cases=cases,
        fmt=fmt,
        out=Path(out),
        manifest=manifest,
        split=split,
        dedupe=dedupe,
        ctx=ExportContext(out_dir=Path(out).parent),
        progress=progress,
    )


def _file_present(export: Export) -> bool:
    return bool(export.file) and (export_root() / export.file).is_file()


def create_export(
    *,
    fmt_name: str,
    version: DatasetVersion | None = None,
    filters: dict[str, Any] | None = None,
    split: str = "all",
    actor: Any = None,
    enqueue: bool = True,
) -> tuple[Export, bool]:
    """Queue an export (returns it and True), or return the finished export of the same version,
    format and split whose file is still stored (and False): a version never changes, so its
    file is served again rather than rebuilt."""
    get_format(fmt_name)
    if split not in SPLITS:
        raise DatasetError({"split": [f"must be one of {', '.join(SPLITS)}"]})
    clean = {} if version is not None else selectors.clean_filters(filters or {})
    if version is not None and version.status != VersionStatus.READY:
        raise DatasetError(
            {"version": [f"version {version.number} is {version.status}, not ready: {version_problem(version)}"]}
        )
    if version is not None:
        for done in Export.objects.filter(version=version, format=fmt_name, split=split, status=ExportStatus.DONE):
            if _file_present(done):
                return done, False
    export = Export.objects.create(
        format=fmt_name,
        version=version,
        filters=clean,
        split=split,
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    audit.record("export.created", export, actor=actor, after={"format": fmt_name, "split": split})
    if enqueue:
        from django_q.tasks import async_task

        timeout = int(getattr(settings, "EXPORT_TASK_TIMEOUT", 3600))  # Q_CLUSTER's 120 s is too short for millions
        transaction.on_commit(
            lambda: async_task("evals.tasks.run_export", export.pk, task_name=f"export-{export.pk}", timeout=timeout)
        )
    return export, True


def _claim_export(export_id: int) -> Export | None:
    """Mark the export running for this attempt, unless it is done or another live worker has it."""
    now = timezone.now()
    with transaction.atomic():
        export = Export.objects.select_for_update().filter(pk=export_id).first()
        if export is None or export.status == ExportStatus.DONE:
            return None
        live = export.status == ExportStatus.RUNNING and export.started_at and now - export.started_at < STALE_AFTER
        if live:
            return None
        export.status = ExportStatus.RUNNING
        export.attempts += 1
        export.started_at = now
        export.rows_done = 0
        export.error = ""
        export.save(update_fields=["status", "attempts", "started_at", "rows_done", "error"])
    return export


def write_progress(db: Any, export_id: int, cases_read: int, rows: int) -> None:
    """Record an export's progress, committed at once. It also keeps started_at fresh: the
    heartbeat that tells a live run from a dead one."""
    with db.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Export._meta.db_table} SET rows_done = %s, rows = %s, started_at = %s WHERE id = %s",
            [cases_read, rows, db.ops.adapt_datetimefield_value(timezone.now()), export_id],
        )


@contextmanager
def side_connection() -> Iterator[Any]:
    """A connection for progress writes that others must see while a long transaction runs. On
    PostgreSQL that is a second connection of its own, in autocommit (progress written in the
    export's or freeze's transaction would stay invisible, and its row locked, until the end);
    elsewhere the default connection (SQLite has one writer and no long read transaction)."""
    if connection.vendor != "postgresql":
        yield connection
        return
    side = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        yield side
    finally:
        side.close()


@contextmanager
def _progress_writer(export_id: int) -> Iterator[Callable[[int, int], None]]:
    """`progress(cases_read, rows)` for an export, written through `side_connection`."""
    with side_connection() as db:
        yield lambda cases_read, rows: write_progress(db, export_id, cases_read, rows)


def run_export(*, export_id: int) -> Export | None:
    """Do one export: stream to a temporary file, rename, then mark it done. Any error marks it
    failed and removes the partial files; a killed worker leaves it `running`, and the retry
    (django-q2 re-delivers the task) starts again from scratch."""
    export = _claim_export(export_id)
    if export is None:
        return None
    fmt = get_format(export.format)
    out = export_directory(export.pk) / f"export-{export.pk}-{export.format}.{fmt.extension}"
    relative = out.relative_to(export_root())
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(out.parent)
    if export.version_id is not None:
        export.rows_total = export.version.case_count
    else:
        export.rows_total = selectors.decided_steps(filters=export.filters).count()
    Export.objects.filter(pk=export.pk).update(rows_total=export.rows_total)

    try:
        with _progress_writer(export.pk) as progress:
            result = export_to_path(
                fmt_name=export.format,
                out=out,
                version=export.version,
                filters=export.filters,
                split=export.split,
                progress=progress,
            )
    except Exception as exc:
        logger.exception("export %s failed", export.pk)
        Export.objects.filter(pk=export.pk).update(
            status=ExportStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=timezone.now()
        )
        raise
    export.status = ExportStatus.DONE
    export.file = str(relative)
    export.manifest = str(manifest_path_for(relative))
    export.rows = result.rows
    export.rows_done = result.cases_read
    export.sha256 = result.sha256
    export.size_bytes = result.size_bytes
    export.summary = result.summary(fmt)
    export.finished_at = timezone.now()
    export.save()
    return export
