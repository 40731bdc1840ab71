"""The redaction pre-check (`Redactor.may_contain`) reads a step's raw JSON text to skip steps
with nothing to redact. It must never skip one that has: whatever the strings hold and however
they were escaped (PostgreSQL's jsonb text, Python's json with or without ensure_ascii as
SQLite's JSONField stores it, orjson), if walking the value redacts something, the pre-check
on its text says so."""

from __future__ import annotations

import json
from collections import Counter

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evals.cases import normalize_input
from evals.redaction import Redactor
from evals.selectors import _exported_input

PIECES = [
    *'abcXYZ019@.-+_ ()é中"\\/\n\t\r\b\x00\x01\u2028😀𝐀',
    "sk-",
    "Bearer ",
    "ghp_",
    "4111 1111 1111 1111",
    "+1 555 123 4567",
    "555-123-4567",
    "user@example.com",
]
texts = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)
values = st.recursive(
    texts,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["content", "arguments", "x"]), inner, max_size=3)
    ),
    max_leaves=6,
)
ENCODINGS = {
    "json ascii (SQLite)": lambda v: json.dumps(v),
    "json utf-8 (PostgreSQL jsonb)": lambda v: json.dumps(v, ensure_ascii=False),
    "orjson": lambda v: orjson.dumps(v).decode(),
}


@settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))
@given(values, st.sampled_from(sorted(ENCODINGS)))
def test_the_pre_check_never_skips_a_value_that_has_something_to_redact(value, encoding):
    counts: Counter[str] = Counter()
    Redactor().redact_value(value, counts)
    if counts:
        raw = ENCODINGS[encoding](value)
        assert Redactor().may_contain(raw), (value, raw, dict(counts))


def test_an_address_with_a_long_local_part_or_domain_is_found():
    for text in ("a" + "5" * 80 + "user@example.com", "mail user@" + "b" * 300 + ".example.com now"):
        assert "[EMAIL]" in Redactor().redact_text(text, Counter())
        assert Redactor().may_contain(json.dumps(text)), text


def test_a_phone_number_after_an_escaped_newline_or_tab_is_found():
    for text in ("Call me\n555-123-4567", "tab\t555-123-4567", "N°\t4111 1111 1111 1111", "é+1 555 123 4567"):
        counts: Counter[str] = Counter()
        assert Redactor().redact_value(text, counts) != text
        assert Redactor().may_contain(json.dumps(text)) and Redactor().may_contain(orjson.dumps(text).decode())


def test_text_without_pii_is_still_skipped():
    for text in ("Line one\nline two\tand a tab", "Order A12 shipped", 'He said \\"hi\\"', "C:\\new\\table"):
        assert not Redactor().may_contain(json.dumps(text), orjson.dumps({"content": text}).decode())


def jsonb_text(value):
    """PostgreSQL's jsonb text form: keys by length, then bytes; ", " and ": " separators."""

    def ordered(v):
        if isinstance(v, dict):
            return {k: ordered(v[k]) for k in sorted(v, key=lambda k: (len(k.encode()), k.encode()))}
        return [ordered(x) for x in v] if isinstance(v, list) else v

    return json.dumps(ordered(value), ensure_ascii=False)


STEP_KEYS = st.sampled_from(["messages", "tools", "content", "role", "model"])
nested = st.recursive(
    texts, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(STEP_KEYS, inner, max_size=3), max_leaves=8
)
step_inputs = nested | st.dictionaries(STEP_KEYS, nested, max_size=3)


@settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))
@given(step_inputs, st.sampled_from(["jsonb", *sorted(ENCODINGS)]))
def test_the_part_of_a_step_input_the_pre_check_skips_holds_no_exported_message(value, encoding):
    """`_exported_input` leaves out what precedes the messages of an input with tools; whatever
    the input, if its exported messages have something to redact, the pre-check says so."""
    counts: Counter[str] = Counter()
    Redactor().redact_value(normalize_input(value)[0], counts)
    if counts:
        raw = jsonb_text(value) if encoding == "jsonb" else ENCODINGS[encoding](value)
        assert Redactor().may_contain(_exported_input(raw, value)), (value, raw, dict(counts))


def test_the_tools_before_the_messages_are_not_scanned():
    tools = [{"type": "function", "function": {"name": "mail", "description": "Mails ops@example.com"}}]
    value = {"messages": [{"role": "user", "content": "hi"}], "tools": tools}
    raw = jsonb_text(value)
    assert raw.startswith('{"tools": ') and Redactor().may_contain(raw)
    assert not Redactor().may_contain(_exported_input(raw, value))
    value["messages"][0]["content"] = "mail me at me@example.com"
    assert Redactor().may_contain(_exported_input(jsonb_text(value), value))


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts)
def test_a_string_the_walk_skips_is_one_no_pattern_redacts(text):
    """`redact_text` leaves a string alone when no trigger is in it: the same result as running
    every pattern over it."""
    everything = Redactor()
    everything.always_walk = True  # every pattern over every string, as with a dataset's own
    counts, expected_counts = Counter(), Counter()
    assert Redactor().redact_text(text, counts) == everything.redact_text(text, expected_counts)
    assert counts == expected_counts


raw_texts = texts | st.tuples(values, st.sampled_from(sorted(ENCODINGS))).map(lambda ve: ENCODINGS[ve[1]](ve[0]))


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(raw_texts, st.none() | raw_texts), min_size=1, max_size=4))
def test_the_chunk_pre_check_flags_every_row_the_exact_check_would(rows):
    """`may_contain_rows` searches TRIGGERS over a chunk's texts, column by column, with Arrow's
    RE2: it must flag every row whose texts the exact check (`may_contain`) says yes to."""
    redactor = Redactor()
    flagged = redactor.may_contain_rows([[a for a, _ in rows], [b for _, b in rows]])
    assert len(flagged) == len(rows)
    for (a, b), flag in zip(rows, flagged, strict=True):
        assert flag or not redactor.may_contain(a, b), (a, b)


def test_a_text_arrow_cannot_hold_is_flagged_for_the_exact_check():
    lone = "\ud800 mail me at a@example.com"  # a lone surrogate has no UTF-8
    assert Redactor().may_contain_rows([[lone, None], ["nothing here", "nor here"]]) == [True, False]


SHORTEST = [
    "sk-" + "a" * 16,  # api keys at their shortest
    "ghp_" + "a" * 20,
    "xoxb-" + "a" * 10,
    "AKIA" + "A" * 16,
    "AIza" + "a" * 35,
    "Bearer " + "a" * 20,
    "a@bc.de",
    "4111 1111 1111 1111",
    "555-123-4567",
    "+1 555 123 4567",
]


def test_each_pattern_at_its_shortest_is_found_by_the_chunk_pre_check():
    for text in SHORTEST:
        counts: Counter[str] = Counter()
        assert Redactor().redact_text(f"x {text} y", counts) != f"x {text} y", text  # a real match
        raw = json.dumps({"content": f"x {text} y"})
        assert Redactor().may_contain_rows([[raw, json.dumps("x\n" + text)]]) == [True, True], text
