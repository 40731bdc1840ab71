"""The streaming read behind exports: one query with a row per step, each chunk's items and
reviews read by two more queries (by the range of their ids or by their list), the reader
thread, and the fast paths of the per-row code, which must give exactly what the general code
gives."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator

import pytest
from django.db import connection

from evals import exporting, selectors, services
from evals.cases import normalize_input, normalize_message, normalize_output, split_for
from evals.exporting import write_export
from evals.formats import get_format
from reviewqueue.review.models import Decision, Review
from tests.factories import UserFactory


def add_reviews(step, *labels: dict) -> list[str]:
    """Extra reviews on the step's decided item (as a consensus queue would have), in order."""
    item_id = Decision.objects.get(step=step).item_id
    names = []
    for index, value in enumerate(labels):
        user = UserFactory(username=f"rev-extra-{step.pk}-{index}")
        Review.objects.create(item_id=item_id, reviewer=user, verdict="approve", labels=value)
        names.append(user.username)
    return names


@pytest.mark.parametrize("chunk", [2000, 1, 2, 3])
def test_reviews_are_grouped_into_one_case_per_step(corpus, monkeypatch, chunk):
    monkeypatch.setattr(selectors, "CHUNK", chunk)  # small chunks: each chunk reads its own reviews
    step = corpus["refund-corrected"]
    extra = add_reviews(step, {"tone": "rude", "helpful": "yes"}, {}, {"tone": "great"})
    cases = list(selectors.step_cases(filters={}))
    ids = [c.step_id for c in cases]
    assert ids == sorted(set(ids)) and len(ids) == selectors.decided_steps(filters={}).count()
    case = next(c for c in cases if c.step_id == step.pk)
    assert case.reviewers == ["rev-ann", *extra]
    assert case.labels == {"tone": "great", "helpful": "yes"}  # merged in review order: later wins
    assert case.queue == "support"
    assert all(c.reviewers == ["rev-ann"] for c in cases if c.step_id != step.pk and not c.auto)


def test_a_steps_reviews_come_in_review_order_not_reviewer_order(corpus):
    """A step's reviews are read by the index on (item, reviewer), and put in review order.
    Reviewers created in the opposite order to their reviews tell the two orders apart."""
    step = corpus["refund-corrected"]
    item_id = Decision.objects.get(step=step).item_id
    early, late = UserFactory(username="rev-early-user"), UserFactory(username="rev-late-user")
    Review.objects.create(item_id=item_id, reviewer=late, verdict="approve", labels={"tone": "late first"})
    Review.objects.create(item_id=item_id, reviewer=early, verdict="approve", labels={"tone": "early last"})
    case = next(c for c in selectors.step_cases(filters={}) if c.step_id == step.pk)
    assert case.reviewers == ["rev-ann", "rev-late-user", "rev-early-user"]
    assert case.labels["tone"] == "early last"


def test_an_export_reads_the_same_with_any_chunk_size(corpus, monkeypatch, tmp_path):
    add_reviews(corpus["refund-corrected"], {"tone": "rude"})
    services.export_to_path(fmt_name="jsonl", out=tmp_path / "a.jsonl")
    monkeypatch.setattr(selectors, "CHUNK", 3)
    services.export_to_path(fmt_name="jsonl", out=tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


@pytest.mark.parametrize("spread", [0, 10**9])  # by the list of item ids; by their range
def test_items_read_by_range_or_by_list_give_the_same_export(corpus, monkeypatch, tmp_path, spread, on_postgres):
    add_reviews(corpus["refund-corrected"], {"tone": "rude"}, {"helpful": "no"})
    services.export_to_path(fmt_name="jsonl", out=tmp_path / "a.jsonl")
    monkeypatch.setattr(selectors, "SPREAD", spread)
    monkeypatch.setattr(selectors, "CHUNK", 4)
    conditions: set[str] = set()
    real = selectors._item_filter
    monkeypatch.setattr(selectors, "_item_filter", lambda ids: conditions.add(real(ids)[0].split()[0]) or real(ids))
    services.export_to_path(fmt_name="jsonl", out=tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert conditions == ({"BETWEEN"} if spread else {"=" if on_postgres else "IN"})


def test_run_ahead_yields_in_order_raises_errors_and_stops_when_closed():
    assert list(selectors._run_ahead(iter(range(10)), depth=2)) == list(range(10))

    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("database went away")

    reader = selectors._run_ahead(failing())
    assert next(reader) == 1
    with pytest.raises(RuntimeError, match="database went away"):
        next(reader)

    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            closed.set()

    reader = selectors._run_ahead(endless(), depth=1)
    assert next(reader) == 1
    reader.close()  # joins the thread, which closes the source
    assert closed.is_set()
    assert not any(t.name == "rq-export-reader" for t in threading.enumerate())


def test_a_failing_export_stops_reading_and_leaves_no_files(tmp_path):
    closed = []

    def cases() -> Iterator:
        try:
            yield "not a case"
        finally:
            closed.append(True)

    with pytest.raises(AttributeError):
        write_export(cases=cases(), fmt=get_format("jsonl"), out=tmp_path / "x.jsonl")
    assert closed == [True] and list(tmp_path.iterdir()) == []


CANONICAL = [
    {"role": "system", "content": "Be brief."},
    {"content": "Hi", "role": "user"},
    {"role": "assistant", "content": "Hello"},
    {"role": "tool", "content": '{"ok": true}', "tool_call_id": "call_1"},
    {"role": "tool", "content": "", "tool_call_id": ""},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    },
]
NOT_CANONICAL = [
    {"role": "assistant", "content": None, "tool_calls": [{"id": "", "type": "function", "function": {"name": "f"}}]},
    {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
    {"role": "assistant", "content": "x", "tool_calls": [{"id": 7, "type": "function", "function": {"name": "f"}}]},
    {"role": "tool", "content": "x", "tool_call_id": 12},
    {"role": "developer", "content": "x"},
    {"role": "user", "content": ["a"]},
    "plain text",
    {"role": "user", "content": "x", "name": "ann"},
]


def general(message):
    """The general path, reached by reordering the keys (the fast paths need exact key order)."""
    if not isinstance(message, dict):
        return normalize_message(message)
    return normalize_message(dict(reversed(list(message.items()))))


@pytest.mark.parametrize("message", CANONICAL)
def test_messages_already_in_form_are_kept_as_they_are(message):
    assert normalize_message(message) is message
    assert normalize_message(message) == general(message)
    assert normalize_input([message]) == ([message], None)


@pytest.mark.parametrize("message", NOT_CANONICAL)
def test_other_messages_take_the_general_path(message):
    assert normalize_message(message) == general(message)
    assert normalize_message(message) is not message


def test_output_fast_path_equals_the_general_path():
    text = {"role": "assistant", "content": "Done."}
    assert normalize_output(text) is text
    assert normalize_output({"content": "Done.", "role": "assistant"}) == text
    assert normalize_output({"role": "assistant", "content": {"a": 1}}) == {"role": "assistant", "content": '{"a":1}'}


@pytest.mark.parametrize("ratio", [0, 1e-300, 0.1, 1 / 3, 0.5, 0.9999999999999999, 1.0])
def test_split_is_the_hash_ratio_rule(ratio):
    for step_id in range(3000):
        digest = hashlib.blake2b(b"rq-split:%d" % step_id, digest_size=8).digest()
        expected = "test" if int.from_bytes(digest, "big") / 2**64 < ratio else "train"
        assert split_for(step_id, ratio) == expected


def test_handing_the_files_to_the_disk_as_they_grow_changes_no_byte(corpus, monkeypatch, tmp_path):
    """`_HashingFile` drops written-back pages every WRITEBACK_EVERY bytes: with tiny blocks the
    files and their hash are those of an export that never does."""
    services.export_to_path(fmt_name="jsonl", out=tmp_path / "a.jsonl")
    monkeypatch.setattr(exporting, "WRITE_BLOCK", 64)
    monkeypatch.setattr(exporting, "WRITEBACK_EVERY", 128)
    advised: list[int] = []
    real = os.posix_fadvise

    def advise(fd: int, start: int, length: int, advice: int) -> None:
        advised.append(length)
        real(fd, start, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", advise)
    result = services.export_to_path(fmt_name="jsonl", out=tmp_path / "b.jsonl")
    assert len(advised) > 10
    for name in ("a.jsonl", "a.manifest.jsonl"):
        assert (tmp_path / name).read_bytes() == (tmp_path / name.replace("a.", "b.")).read_bytes()
    assert result.sha256 == hashlib.sha256((tmp_path / "b.jsonl").read_bytes()).hexdigest()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_read_sees_its_steps_and_their_reviews_in_one_snapshot(corpus, monkeypatch):
    """A review committed while an export reads (by another connection) is not in the export,
    though the query that reads its step's reviews runs after the commit."""
    monkeypatch.setattr(selectors, "CHUNK", 1)
    last = selectors.decided_steps(filters={}).last()
    item_id = Decision.objects.get(step=last).item_id
    late = UserFactory(username="rev-too-late")
    cases = selectors.step_cases(filters={}, read_ahead=False)
    assert next(cases).step_id != last.pk

    def review_now() -> None:
        try:
            Review.objects.create(item_id=item_id, reviewer=late, verdict="approve", labels={"tone": "late"})
        finally:
            connection.close()

    writer = threading.Thread(target=review_now)
    writer.start()
    writer.join()
    case = next(c for c in cases if c.step_id == last.pk)
    cases.close()
    assert "rev-too-late" not in case.reviewers and case.labels.get("tone") != "late"
    assert Review.objects.filter(reviewer=late).exists()  # committed all along
