"""Parallel exports (evals/parallel.py): worker processes export slices of the steps and the
parts are joined into exactly the files a serial export writes, duplicates across slices,
skips, redactions and images included; a failing worker leaves no files behind."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from evals import exporting, parallel, selectors, services
from evals.formats import get_format
from reviewqueue.core.ingest import ingest_steps
from reviewqueue.core.models import Step
from reviewqueue.review.models import Queue, ReviewItem
from reviewqueue.review.services import claim_next_item, submit_review
from tests.evals.conftest import DECISIONS, corpus_payloads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# Copies of corpus steps, added after it (so in later slices): a skipped rejection, a redacted
# correction, a screenshot, and one step twice (a duplicate inside a slice as well).
COPIES = ["answer-rejected", "pii", "screenshot", "plain-3", "plain-3", "refund-corrected"]


@pytest.fixture
def duplicated(corpus) -> dict[str, Step]:
    payloads = {p["external_id"]: p for p in corpus_payloads()}
    copies = [{**payloads[name], "external_id": f"{name}-copy-{n}"} for n, name in enumerate(COPIES)]
    agent = corpus["pii"].agent
    ingest_steps(agent=agent, payloads=copies)
    queue, reviewer = Queue.objects.get(slug="support"), corpus["pii"].decision.reviewer
    for _ in range(ReviewItem.objects.filter(queue=queue, status="pending").count()):
        item = claim_next_item(queue=queue, user=reviewer)
        original = item.step.external_id.rsplit("-copy-", 1)[0]
        verdict, output, reason = DECISIONS.get(original, ("approve", None, ""))
        labels = {"tone": "rude" if original == "answer-rejected" else "ok"}
        submit_review(item_id=item.pk, user=reviewer, verdict=verdict, output=output, reason=reason, labels=labels)
    return corpus


def export(tmp_path: Path, name: str, workers: int, **kwargs):
    out = tmp_path / f"{name}-{workers}" / "data.jsonl"
    result = services.export_to_path(fmt_name=name, out=out, workers=workers, **kwargs)
    return out, result


@pytest.mark.parametrize("name", ["openai-sft", "openai-dpo", "jsonl", "trl-sft"])
def test_a_parallel_export_writes_the_serial_bytes(duplicated, tmp_path, monkeypatch, name):
    monkeypatch.setattr(parallel, "MIN_STEPS_PER_SLICE", 1)
    serial, expected = export(tmp_path, name, 1)
    assert expected.workers == [] and expected.duplicates_removed == len(COPIES) + 1  # and the corpus's own
    if name in ("openai-sft", "jsonl"):
        assert expected.redactions and expected.cases_read > expected.rows
    steps = selectors.decided_steps(filters={}).count()
    for workers in (2, 3, 5, steps):
        out, result = export(tmp_path, name, workers)
        assert len(result.workers) == workers  # each slice a few ids: more slices than workers
        assert sum(worker["cases_read"] for worker in result.workers) == result.cases_read
        assert out.read_bytes() == serial.read_bytes()
        manifest = out.with_name("data.manifest.jsonl")
        assert manifest.read_bytes() == serial.with_name("data.manifest.jsonl").read_bytes()
        assert result.summary(get_format(name)) == expected.summary(get_format(name))
        assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in serial.parent.iterdir())


def test_a_split_and_auto_approved_steps_export_the_same_in_parallel(duplicated, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_STEPS_PER_SLICE", 1)
    kwargs = {"split": "train", "filters": {"include_auto_approved": True}}
    serial, _ = export(tmp_path, "jsonl", 1, **kwargs)
    out, result = export(tmp_path, "jsonl", 4, **kwargs)
    assert len(result.workers) == 4
    assert out.read_bytes() == serial.read_bytes()
    assert out.with_name("data.manifest.jsonl").read_bytes() == serial.with_name("data.manifest.jsonl").read_bytes()


def test_progress_counts_every_process_and_ends_with_the_totals(duplicated, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_STEPS_PER_SLICE", 1)
    monkeypatch.setattr("evals.exporting.PROGRESS_EVERY", 2)
    reports: list[tuple[int, int]] = []
    _, result = export(tmp_path, "jsonl", 3, progress=lambda read, rows: reports.append((read, rows)))
    assert reports[-1] == (result.cases_read, result.rows)
    assert all(read <= result.cases_read for read, _ in reports)


def test_small_exports_stay_serial(duplicated, tmp_path):
    _, result = export(tmp_path, "jsonl", 4)  # fewer than MIN_STEPS_PER_SLICE steps a worker
    assert result.workers == []


def disk_on_fire() -> None:
    raise RuntimeError("disk on fire")


def killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize(("fail", "message"), [(disk_on_fire, "disk on fire"), (killed, "exit status")])
def test_a_worker_that_fails_or_is_killed_fails_the_export_and_leaves_no_files(
    duplicated, tmp_path, monkeypatch, fail, message
):
    monkeypatch.setattr(parallel, "MIN_STEPS_PER_SLICE", 1)
    real = selectors.step_cases

    def failing_in_workers(**kwargs):
        first, _ = kwargs.get("ids", (None, None))
        for case in real(**kwargs):
            if first is not None:  # the first case of any slice but the first
                fail()
            yield case

    monkeypatch.setattr(selectors, "step_cases", failing_in_workers)
    with pytest.raises(parallel.ExportWorkerError, match=message):
        export(tmp_path, "openai-sft", 3)
    assert list((tmp_path / "openai-sft-3").iterdir()) == []


def test_slices_that_end_out_of_order_are_appended_in_order(duplicated, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_STEPS_PER_SLICE", 1)
    serial, _ = export(tmp_path, "jsonl", 1)
    real = selectors.step_cases

    def first_slice_last(**kwargs):
        if kwargs.get("ids", (None, None))[0] is None:
            time.sleep(1.5)  # the other workers export every later slice meanwhile
        yield from real(**kwargs)

    monkeypatch.setattr(selectors, "step_cases", first_slice_last)
    out, _ = export(tmp_path, "jsonl", 3)
    assert out.read_bytes() == serial.read_bytes()
    assert out.with_name("data.manifest.jsonl").read_bytes() == serial.with_name("data.manifest.jsonl").read_bytes()


def test_by_default_an_export_runs_on_one_process_more_than_the_cpus(settings, monkeypatch):
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    settings.EXPORT_WORKERS = 0
    assert parallel.worker_count() == 3
    settings.EXPORT_WORKERS = 1
    assert parallel.worker_count() == 1


def test_the_processes_of_a_parallel_export_read_without_a_reader_thread(duplicated, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_STEPS_PER_SLICE", 1)
    monkeypatch.setattr("evals.exporting.PROGRESS_EVERY", 1)
    monkeypatch.setattr(selectors, "CHUNK", 1)  # a reader thread would still be reading ahead
    threads: set[str] = set()

    def watch(read: int, rows: int) -> None:
        threads.update(t.name for t in threading.enumerate())

    _, result = export(tmp_path, "jsonl", 3, progress=watch)
    assert len(result.workers) == 3 and "rq-export-reader" not in threads
    threads.clear()
    export(tmp_path, "openai-sft", 1, progress=watch)  # one process: the reader thread runs ahead
    assert "rq-export-reader" in threads


PART_SUFFIXES = ("-data", "-manifest", "-index", "-result", "-error")


def test_workers_whose_export_dies_remove_their_files_and_exit(duplicated, tmp_path, monkeypatch):
    """The export's own process is killed mid-export: its workers notice (their parent changed),
    remove every part file they wrote and exit. (The killed process's own temporary files are
    removed when the export is retried: `remove_stale_parts`.)"""
    monkeypatch.setattr(parallel, "MIN_STEPS_PER_SLICE", 1)
    monkeypatch.setattr("evals.exporting.PROGRESS_EVERY", 1)
    real = selectors.step_cases

    def slow(**kwargs):
        for case in real(**kwargs):
            time.sleep(0.05)
            yield case

    monkeypatch.setattr(selectors, "step_cases", slow)
    # The export's process appends nothing: the workers finish every slice and wait for it.
    monkeypatch.setattr(exporting.ExportFiles, "add_part", lambda *args: time.sleep(60))
    out = tmp_path / "killed" / "data.jsonl"
    out.parent.mkdir()
    child = os.fork()
    if child == 0:  # the export's own process, killed below
        try:
            parallel._reconnect()
            services.export_to_path(fmt_name="jsonl", out=out, workers=3)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 20
    while not any(".part-" in p.name for p in out.parent.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(".part-" in p.name for p in out.parent.iterdir()), "the workers never started"
    time.sleep(2)  # every slice done: the workers wait for their parts to be appended
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)

    def parts() -> list[str]:  # the workers' files (the killed process's own are cleaned on retry)
        return [p.name for p in out.parent.iterdir() if p.name.endswith(PART_SUFFIXES)]

    while parts() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert parts() == [], sorted(p.name for p in out.parent.iterdir())
    assert not out.exists()
