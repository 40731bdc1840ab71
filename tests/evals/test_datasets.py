"""Datasets and versions: freezing, determinism, stable splits, redaction, deduplication."""

from __future__ import annotations

import json

import pytest

from evals import services
from evals.models import EvalCase
from evals.redaction import Redactor
from reviewqueue.core.ingest import ingest_steps
from reviewqueue.review.models import ReviewItem
from reviewqueue.review.services import claim_next_item, submit_review


def make_dataset(name="support", **data):
    return services.save_dataset(data={"name": name, **data})


def test_freeze_makes_an_immutable_counted_version(corpus):
    dataset = make_dataset(test_ratio=0.3)
    version = services.freeze_version(dataset=dataset)
    assert version.number == 1 and version.case_count == 17 and version.duplicates_removed == 1
    assert version.counts["verdict"] == {"approved": 13, "corrected": 3, "rejected": 1}
    assert version.counts["kind"]["tool_call"] == 2
    assert sum(version.counts["split"].values()) == 17
    assert len(version.content_hash) == 64
    case = EvalCase.objects.get(version=version, step=corpus["refund-corrected"])
    assert case.verdict == "corrected" and case.reason == "Refund is 39.90 EUR, not 399."
    assert case.labels == {"tone": "ok"} and case.reviewers == ["rev-ann"]
    # a second freeze of unchanged data has the same content hash
    again = services.freeze_version(dataset=dataset)
    assert again.number == 2 and again.content_hash == version.content_hash


def test_exporting_a_version_twice_gives_identical_bytes(corpus, tmp_path):
    version = services.freeze_version(dataset=make_dataset())
    for name, ext in (("openai-sft", "jsonl"), ("jsonl", "jsonl"), ("parquet", "parquet"), ("csv", "csv")):
        first = services.export_to_path(fmt_name=name, out=tmp_path / "a" / f"{name}.{ext}", version=version)
        second = services.export_to_path(fmt_name=name, out=tmp_path / "b" / f"{name}.{ext}", version=version)
        assert (tmp_path / "a" / f"{name}.{ext}").read_bytes() == (tmp_path / "b" / f"{name}.{ext}").read_bytes()
        assert first.sha256 == second.sha256 and first.rows > 0
        manifest_a = (tmp_path / "a" / f"{name}.manifest.jsonl").read_bytes()
        assert manifest_a == (tmp_path / "b" / f"{name}.manifest.jsonl").read_bytes()


def test_split_is_stable_across_versions_and_honoured(corpus, tmp_path):
    dataset = make_dataset(test_ratio=0.5)
    v1 = services.freeze_version(dataset=dataset)
    sides = dict(EvalCase.objects.filter(version=v1).values_list("step_ref", "split"))
    assert set(sides.values()) == {"train", "test"}
    # new decided steps arrive; the old steps keep their side
    queue = corpus["huge"].review_items.first().queue
    ingest_steps(
        agent=corpus["huge"].agent,
        payloads=[
            {"external_id": f"late-{n}", "kind": "llm", "input": f"q{n}", "output": f"a{n}", "confidence": 0.5}
            for n in range(5)
        ],
    )
    reviewer = queue.members.first()
    for _ in range(ReviewItem.objects.filter(queue=queue, status="pending").count()):
        item = claim_next_item(queue=queue, user=reviewer)
        submit_review(item_id=item.pk, user=reviewer, verdict="approve", labels={"tone": "ok"})
    v2 = services.freeze_version(dataset=dataset)
    assert v2.case_count == v1.case_count + 5
    assert {
        k: v for k, v in EvalCase.objects.filter(version=v2).values_list("step_ref", "split") if k in sides
    } == sides
    out = tmp_path / "test.jsonl"
    result = services.export_to_path(fmt_name="jsonl", out=out, version=v2, split="test")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and {r["split"] for r in rows} == {"test"} and result.rows == v2.counts["split"]["test"]


def test_redaction_removes_values_and_counts_them(corpus, tmp_path):
    out = tmp_path / "sft.jsonl"
    result = services.export_to_path(fmt_name="openai-sft", out=out)
    text = out.read_text()
    for secret in ("jane.doe@example.com", "4111 1111 1111 1111", "+44 20 7946 0958", "sk-abcdefghijklmnop1234"):
        assert secret not in text
    assert "[EMAIL]" in text and "[CARD]" in text and "[PHONE]" in text and "[API_KEY]" in text
    assert result.redactions == {"email": 3, "card": 2, "phone": 1, "api_key": 1}
    manifest = [json.loads(line) for line in out.with_name("sft.manifest.jsonl").read_text().splitlines()]
    pii_line = next(m for m in manifest[:-1] if m["step_id"] == corpus["pii"].pk)
    assert pii_line["redactions"] == {"email": 3, "card": 2, "phone": 1, "api_key": 1}
    assert manifest[-1]["summary"]["redactions"] == result.redactions
    assert "jane.doe" not in out.with_name("sft.manifest.jsonl").read_text()
    # without redaction the values are there
    raw = tmp_path / "raw.jsonl"
    services.export_to_path(fmt_name="openai-sft", out=raw, redact=False)
    assert "jane.doe@example.com" in raw.read_text()


def test_dataset_patterns_and_switch(corpus, tmp_path):
    dataset = make_dataset(redaction_patterns=[{"name": "order_id", "pattern": "A[0-9]{3}"}])
    version = services.freeze_version(dataset=dataset)
    out = tmp_path / "x.jsonl"
    result = services.export_to_path(fmt_name="jsonl", out=out, version=version)
    assert "A123" not in out.read_text() and "[ORDER_ID]" in out.read_text()
    assert result.redactions["order_id"] >= 3
    dataset.redact = False
    dataset.save()
    services.export_to_path(fmt_name="jsonl", out=out, version=version)
    assert "jane.doe@example.com" in out.read_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail bob.smith+x@mail.example.org now", "mail [EMAIL] now"),
        ("call +1 (555) 123-4567", "call [PHONE]"),
        ("card 4242-4242-4242-4242 ok", "card [CARD] ok"),
        ("not a card 1234 5678 9012 3456", "not a card 1234 5678 9012 3456"),  # fails the Luhn check
        ("eta 2026-11-27 10:00", "eta 2026-11-27 10:00"),  # a date is not a phone number
        ("order A123 costs 39.90", "order A123 costs 39.90"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123", "token [API_KEY]"),
        ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz.123", "Authorization: Bearer [API_KEY]"),
    ],
)
def test_redaction_patterns(text, expected):
    from collections import Counter

    assert Redactor().redact_text(text, Counter()) == expected


def test_redaction_keeps_tool_arguments_valid_json():
    from collections import Counter

    counts: Counter[str] = Counter()
    message = {"arguments": json.dumps({"email": "a.b@example.com", "amount": 12345678901})}
    redacted = Redactor().redact_value(message, counts)
    assert json.loads(redacted["arguments"]) == {"email": "[EMAIL]", "amount": 12345678901}


def test_bad_dataset_input_is_refused_with_field_names(db):
    with pytest.raises(services.DatasetError) as exc:
        services.save_dataset(
            data={
                "name": "bad name!",
                "test_ratio": 2,
                "filters": {"verdicts": ["maybe"], "since": "yesterday", "colour": "red"},
                "redaction_patterns": [{"name": "x", "pattern": "("}],
            }
        )
    errors = exc.value.errors
    assert set(errors) >= {"name", "test_ratio", "filters.verdicts", "filters.since", "filters", "redaction_patterns"}


def test_filters_choose_steps(corpus, tmp_path):
    from evals.selectors import FilterError, clean_filters, decided_steps

    def ids(**filters):
        return set(decided_steps(filters=clean_filters(filters)).values_list("external_id", flat=True))

    assert ids(verdicts=["corrected"]) == {"refund-corrected", "answer-corrected", "pii"}
    assert ids(kinds=["tool_call"]) == {"refund-corrected", "screenshot"}
    assert ids(labels={"tone": "rude"}) == {"answer-rejected"}
    assert ids(queues=["nope"]) == set()
    assert "auto" in ids(include_auto_approved=True) and "auto" not in ids()
    assert ids(since="2000-01-01") == ids() and ids(until="2000-01-01") == set()
    assert ids(since="2000-01-01", until="2000-01-01") == set()  # one day: since is its start, until its end
    with pytest.raises(FilterError) as exc:
        clean_filters({"since": "2000-01-02", "until": "2000-01-01"})
    assert exc.value.errors == {"until": ["must not be before since"]}


def test_freezing_locks_the_included_decisions(corpus):
    from reviewqueue.review.models import Decision

    assert not Decision.objects.filter(exported_at__isnull=False).exists()
    dataset = make_dataset(filters={"verdicts": ["corrected"]})
    services.freeze_version(dataset=dataset)
    locked = set(Decision.objects.filter(exported_at__isnull=False).values_list("step__external_id", flat=True))
    assert locked == {"refund-corrected", "answer-corrected", "pii"}


def test_a_freeze_that_fails_marks_the_version_failed_and_keeps_no_cases(corpus, monkeypatch):
    dataset = make_dataset()
    version = services.start_freeze(dataset=dataset, enqueue=False)
    assert version.status == "freezing" and version.number == 1
    real_cases = services.selectors.step_cases

    def breaks_midway(**kwargs):
        for n, case in enumerate(real_cases(**kwargs)):
            if n == 5:
                raise RuntimeError("disk full")
            yield case

    monkeypatch.setattr(services.selectors, "step_cases", breaks_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        services.run_freeze(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == "failed" and version.error == "RuntimeError: disk full"
    assert not EvalCase.objects.filter(version=version).exists() and version.case_count == 0
    assert services.run_freeze(version_id=version.pk) is None  # a failed version stays failed
    with pytest.raises(services.DatasetError, match="freezing failed"):
        services.create_export(fmt_name="jsonl", version=version, enqueue=False)
    assert services.latest_ready_version(dataset) is None
    monkeypatch.setattr(services.selectors, "step_cases", real_cases)
    retried = services.freeze_version(dataset=dataset)  # a new version, numbered after the failed one
    assert retried.number == 2 and retried.status == "ready" and retried.case_count == 17
    assert services.latest_ready_version(dataset) == retried


def test_a_ready_version_is_not_frozen_again(corpus):
    version = services.freeze_version(dataset=make_dataset())
    assert version.status == "ready" and version.frozen_at is not None and version.progress == 1
    assert services.run_freeze(version_id=version.pk) is None  # django-q2 delivering the task again
    assert EvalCase.objects.filter(version=version).count() == 17


@pytest.mark.postgres
def test_a_second_attempt_waits_out_a_live_one_and_progress_is_visible(transactional_db, corpus, monkeypatch):
    """While one worker freezes (holding the version's lock), a redelivered task does nothing; once
    that worker is gone (its connection closed, as when it is killed) the retry freezes. The
    progress is committed as it goes, so other connections see it during the freeze."""
    from django.db import DEFAULT_DB_ALIAS, connections

    version = services.start_freeze(dataset=make_dataset(), enqueue=False)
    live = connections.create_connection(DEFAULT_DB_ALIAS)
    with live.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [services.FREEZE_LOCK_CLASS, version.pk])
    assert services.run_freeze(version_id=version.pk) is None
    version.refresh_from_db()
    assert version.status == "freezing" and not EvalCase.objects.filter(version=version).exists()
    live.close()  # the live attempt dies

    monkeypatch.setattr(services, "PROGRESS_EVERY", 2)
    seen: list[tuple[int, int]] = []
    write = services.write_version_progress

    def write_and_look(db, version_id, cases_done, cases_total=None):
        write(db, version_id, cases_done, cases_total)
        observer = connections.create_connection(DEFAULT_DB_ALIAS)
        try:
            with observer.cursor() as cursor:
                cursor.execute("SET lock_timeout = '2s'")  # the row must not be locked by the freeze
                cursor.execute(
                    "SELECT cases_done, cases_total FROM evals_datasetversion WHERE id = %s FOR UPDATE", [version_id]
                )
                seen.append(cursor.fetchone())
        finally:
            observer.close()

    monkeypatch.setattr(services, "write_version_progress", write_and_look)
    done = services.run_freeze(version_id=version.pk)
    assert done is not None and done.status == "ready" and done.case_count == 17
    assert seen[0] == (0, 18) and seen[1:3] == [(2, 18), (4, 18)]


def test_an_empty_export_warns_in_plain_words(corpus, tmp_path):
    result = services.export_to_path(fmt_name="jsonl", out=tmp_path / "none.jsonl", filters={"agents": ["nobody"]})
    assert result.rows == 0 and result.warnings == ["jsonl needs at least 1 example per file; this one has 0"]
    assert (tmp_path / "none.jsonl").read_bytes() == b""


@pytest.mark.parametrize("name", ["jsonl", "openai-sft"])
def test_pii_before_a_nested_messages_key_is_redacted(corpus, tmp_path, name):
    """The pre-check searches an input from its first `"messages": [`; when that is not the
    input's own message list (here a nested one, after the PII), the step is still checked."""
    agent = corpus["pii"].agent
    value = {"a": "mail me at hidden.one@example.com", "zz": {"messages": [1]}}
    ingest_steps(agent=agent, payloads=[{"external_id": "nested-messages", "kind": "llm", "input": value,
                                         "output": "ok", "confidence": 0.995}])  # fmt: skip
    out = tmp_path / f"{name}.jsonl"
    services.export_to_path(fmt_name=name, out=out, filters={"include_auto_approved": True})
    text = out.read_text()
    assert "nested" in text or "zz" in text  # the step is in the export
    assert "hidden.one@example.com" not in text and "[EMAIL]" in text


def test_the_decision_time_is_written_in_iso_8601_in_every_tabular_format(corpus, tmp_path):
    import csv

    from reviewqueue.core.models import Step

    services.export_to_path(fmt_name="jsonl", out=tmp_path / "a.jsonl")
    services.export_to_path(fmt_name="csv", out=tmp_path / "a.csv")
    written = {}
    for line in (tmp_path / "a.jsonl").read_text().splitlines():
        record = json.loads(line)
        written[record["step_id"]] = record["decided_at"]
    assert written
    for step_id, decided_at in written.items():
        assert decided_at == Step.objects.get(pk=step_id).decision.decided_at.isoformat()
    csv.field_size_limit(1 << 30)  # the corpus's huge output
    with open(tmp_path / "a.csv", newline="") as rows:
        assert {int(row["step_id"]): row["decided_at"] for row in csv.DictReader(rows)} == written
