"""Manifest lines are built from a template with a cached middle; they must be exactly the
JSON of the manifest entry, whatever the names, reviewers, ids and redactions hold."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from evals.cases import Case
from evals.exporting import ManifestLines, numbered_line

names = st.text(max_size=8)  # quotes, backslashes, control characters, any unicode


def entry(line: int, case: Case) -> dict:
    value = {
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
        value["redactions"] = case.redactions
    return value


cases = st.builds(
    lambda step, item, agent, queue, reviewers, verdict, auto, split, version, digest, redactions: Case(
        step,
        item,
        agent,
        queue,
        "llm",
        "",
        verdict,
        auto,
        "",
        [],
        None,
        None,
        None,
        split,
        reviewers=reviewers,
        version_id=version,
        content_hash=digest,
        redactions=redactions,
    ),  # fmt: skip
    st.integers(1, 2**63 - 1),
    st.none() | st.integers(1, 2**63 - 1),
    names,
    names,
    st.lists(names, max_size=3),
    st.sampled_from(["approved", "corrected", "rejected", "auto_approved"]),
    st.booleans(),
    st.sampled_from(["train", "test"]),
    st.none() | st.integers(1, 10**6),
    st.text("0123456789abcdef", min_size=64, max_size=64),
    st.dictionaries(st.sampled_from(["email", "phone", "card"]), st.integers(1, 9), max_size=2),
)


@given(st.lists(cases, min_size=1, max_size=5), st.integers(1, 10**9))
def test_a_manifest_line_is_the_json_of_its_entry(batch, first):
    lines = ManifestLines()
    for offset, case in enumerate(batch + batch):  # twice: the second time from the cache
        line = lines.line(first + offset, case)
        assert line == orjson.dumps(entry(first + offset, case), option=orjson.OPT_APPEND_NEWLINE)
        assert numbered_line(first + offset, lines.body(case)) == line
