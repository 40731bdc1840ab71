"""The condition engine: validation messages, each op, and evaluate() agreeing with to_q() on the
database (SQLite here; PostgreSQL when DATABASE_URL points at it)."""

from __future__ import annotations

import fnmatch
import math

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reviewqueue.core.models import Agent, Step
from reviewqueue.routing.conditions import (
    KINDS,
    OPS,
    ConditionError,
    compile_glob,
    evaluate,
    sample_hit,
    to_q,
    validate_conditions,
)


def facts(**overrides: object) -> dict:
    base = {"confidence": 0.5, "kind": "llm", "name": "gpt-4o", "agent": "support-bot", "metadata": {}}
    return {**base, **overrides}


def holds(field: str, op: str, value: object = None, **fact_overrides: object) -> bool:
    condition = (
        {"field": field, "op": op} if op in ("exists", "missing") else {"field": field, "op": op, "value": value}
    )
    return evaluate(validate_conditions([condition]), facts(**fact_overrides)) is not None


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ("kind=llm", "conditions: must be a list"),
        ([{"field": "kind", "op": "eq", "value": "llm"}, "x"], "conditions[1]: must be an object"),
        ([{"field": "kind", "op": "like", "value": "x"}], "conditions[0].op: unknown op 'like'; expected one of lt,"),
        ([{"field": "colour", "op": "eq", "value": "x"}], "conditions[0].field: unknown field 'colour'"),
        ([{"field": "metadata.a..b", "op": "exists"}], "conditions[0].field: empty path segment in 'metadata.a..b'"),
        ([{"field": "metadata.", "op": "exists"}], "conditions[0].field: empty path segment"),
        ([{"field": "metadata.a b", "op": "exists"}], "conditions[0].field: bad path segment 'a b'"),
        ([{"field": "metadata.0", "op": "exists"}], "conditions[0].field: bad path segment '0'"),
        (
            [{"field": "confidence", "op": "lt", "value": "0.5"}],
            "conditions[0].value: 'lt' needs a number, got a string",
        ),
        (
            [{"field": "confidence", "op": "gte", "value": True}],
            "conditions[0].value: 'gte' needs a number, got a boolean",
        ),
        ([{"field": "confidence", "op": "lt"}], "conditions[0].value: required for 'lt'"),
        ([{"field": "name", "op": "lt", "value": 3}], "conditions[0].op: 'lt' compares numbers; 'name' is a string"),
        ([{"field": "kind", "op": "in", "value": "llm"}], "conditions[0].value: 'in' needs a non-empty list"),
        ([{"field": "kind", "op": "in", "value": []}], "conditions[0].value: 'in' needs a non-empty list"),
        ([{"field": "kind", "op": "in", "value": ["llm", "tool"]}], "conditions[0].value[1]: unknown kind 'tool'"),
        ([{"field": "name", "op": "glob", "value": 5}], "conditions[0].value: 'glob' needs a string pattern"),
        ([{"field": "confidence", "op": "glob", "value": "0.*"}], "conditions[0].op: 'glob' matches strings"),
        ([{"field": "name", "op": "eq", "value": 5}], "conditions[0].value: 'name' is a string; got int"),
        ([{"field": "confidence", "op": "eq", "value": "high"}], "conditions[0].value: 'confidence' is a number"),
        ([{"field": "metadata.a", "op": "eq", "value": None}], "conditions[0].value: must be a string, number or"),
        ([{"field": "metadata.a", "op": "eq", "value": {"x": 1}}], "got an object"),
        ([{"field": "metadata.a", "op": "in", "value": [1, [2]]}], "conditions[0].value[1]: must be a string"),
        ([{"field": "metadata.a", "op": "exists", "value": 1}], "conditions[0].value: 'exists' takes no value"),
        ([{"field": "metadata.a", "op": "gt", "value": math.inf}], "conditions[0].value: must be a finite number"),
        ([{"field": "metadata.a", "op": "gt", "value": 10**400}], "conditions[0].value: must be a finite number"),
        ([{"field": "metadata.a", "op": "eq", "value": "a\x00b"}], "must not contain NUL"),
        ([{"field": "kind", "op": "eq", "value": "llm", "negate": True}], "conditions[0]: unknown key 'negate'"),
        ([{"op": "exists"}], "conditions[0].field: required"),
    ],
)
def test_bad_conditions_are_refused_with_a_message_naming_the_condition(conditions: object, message: str) -> None:
    with pytest.raises(ConditionError) as error:
        validate_conditions(conditions)
    assert message in str(error.value)


def test_the_error_knows_which_condition_and_key_failed() -> None:
    with pytest.raises(ConditionError) as error:
        validate_conditions([{"field": "kind", "op": "eq", "value": "llm"}, {"field": "kind", "op": "like"}])
    assert error.value.field == "conditions[1].op"
    assert "expected one of lt, lte, gt, gte, eq, ne, in, glob, exists, missing" in error.value.message


def test_validation_normalises_valueless_ops_and_accepts_none_as_no_conditions() -> None:
    assert validate_conditions(None) == []
    assert validate_conditions([{"field": "confidence", "op": "missing", "value": None}]) == [
        {"field": "confidence", "op": "missing"}
    ]


# --- each op -----------------------------------------------------------------------------------


def test_numeric_comparisons_on_confidence() -> None:
    assert holds("confidence", "lt", 0.7, confidence=0.69)
    assert not holds("confidence", "lt", 0.7, confidence=0.7)
    assert holds("confidence", "lte", 0.7, confidence=0.7)
    assert holds("confidence", "gt", 0, confidence=0.1)
    assert holds("confidence", "gte", 1, confidence=1.0)
    assert not holds("confidence", "lt", 0.7, confidence=None)
    assert not holds("confidence", "gte", 0, confidence=None)


def test_numeric_comparisons_on_metadata_never_match_non_numbers() -> None:
    assert holds("metadata.latency_ms", "gt", 100, metadata={"latency_ms": 250})
    assert not holds("metadata.latency_ms", "gt", 100, metadata={"latency_ms": "250"})
    assert not holds("metadata.flag", "gte", 1, metadata={"flag": True})
    assert not holds("metadata.latency_ms", "gt", 100, metadata={})


def test_eq_and_ne_compare_json_types_strictly() -> None:
    assert holds("metadata.customer.tier", "eq", "vip", metadata={"customer": {"tier": "vip"}})
    assert not holds("metadata.customer.tier", "eq", "vip", metadata={"customer": "vip"})
    assert holds("metadata.n", "eq", 1, metadata={"n": 1.0})
    assert not holds("metadata.n", "eq", 1, metadata={"n": True})
    assert not holds("metadata.flag", "eq", True, metadata={"flag": "true"})
    assert holds("metadata.flag", "eq", False, metadata={"flag": False})
    assert holds("kind", "eq", "tool_call", kind="tool_call")
    assert holds("agent", "ne", "other-bot")
    # ne is "not eq": a missing field is not equal to anything.
    assert holds("metadata.customer.tier", "ne", "vip", metadata={})
    assert holds("confidence", "ne", 0.5, confidence=None)
    assert not holds("confidence", "ne", 0.5, confidence=0.5)


def test_in_matches_any_listed_value() -> None:
    assert holds("name", "in", ["issue_refund", "cancel_order"], name="cancel_order")
    assert not holds("name", "in", ["issue_refund", "cancel_order"], name="get_order")
    assert holds("metadata.v", "in", ["2", 2], metadata={"v": 2})
    assert not holds("metadata.v", "in", ["2", True], metadata={"v": 1})


def test_glob_is_case_sensitive_and_matches_the_whole_string() -> None:
    assert holds("name", "glob", "get_*", name="get_order")
    assert not holds("name", "glob", "get_*", name="Get_order")
    assert not holds("name", "glob", "get", name="get_order")
    assert holds("name", "glob", "gpt-4?", name="gpt-4o")
    assert holds("name", "glob", "[!x]*", name="gpt")
    assert holds("metadata.url", "glob", "https://*.example.com/*", metadata={"url": "https://a.example.com/x"})
    assert not holds("metadata.url", "glob", "*", metadata={"url": 5})
    assert holds("metadata.text", "glob", "a*b", metadata={"text": "a\nb"})
    assert not holds("metadata.text", "glob", "ab", metadata={"text": "ab\n"})


def test_exists_and_missing() -> None:
    assert holds("confidence", "missing", confidence=None)
    assert holds("confidence", "exists", confidence=0.0)
    assert holds("metadata.a.b", "exists", metadata={"a": {"b": 0}})
    assert holds("metadata.a.b", "missing", metadata={"a": {"b": None}})
    assert holds("metadata.a.b", "missing", metadata={"a": ["b"]})
    assert holds("metadata.a.b", "missing", metadata={"a": "b"})
    assert holds("name", "missing", name="")


def test_evaluate_reports_the_matched_values() -> None:
    conditions = validate_conditions(
        [
            {"field": "kind", "op": "eq", "value": "final_answer"},
            {"field": "confidence", "op": "lt", "value": 0.7},
            {"field": "metadata.customer.tier", "op": "missing"},
        ]
    )
    assert evaluate(conditions, facts(kind="final_answer", confidence=0.4)) == {
        "kind": "final_answer",
        "confidence": 0.4,
        "metadata.customer.tier": None,
    }
    assert evaluate(conditions, facts(kind="final_answer", confidence=0.9)) is None
    assert evaluate([], facts()) == {}


def test_sample_hit_is_deterministic_and_close_to_the_rate() -> None:
    assert all(sample_hit(1, f"k{i}") for i in range(50))
    assert not any(sample_hit(0, f"k{i}") for i in range(50))
    hits = [sample_hit(0.2, f"agent:{i}") for i in range(5000)]
    assert hits == [sample_hit(0.2, f"agent:{i}") for i in range(5000)]
    assert 0.17 < sum(hits) / len(hits) < 0.23


# --- glob against fnmatch ----------------------------------------------------------------------

GLOB_CHARS = "ab.-^\\$()|+{}é\n"
glob_char = st.sampled_from(GLOB_CHARS)
glob_class = st.builds(
    lambda negate, members: "[" + ("!" if negate else "") + "".join(members) + "]",
    st.booleans(),
    st.lists(
        st.one_of(
            st.sampled_from("ab.^\\é"),
            st.tuples(glob_char, glob_char).map(lambda t: f"{min(t)}-{max(t)}"),
        ),
        min_size=1,
        max_size=3,
    ).filter(lambda members: not members[0].startswith("!")),
)
glob_pattern = st.lists(st.one_of(glob_char, st.just("*"), st.just("?"), glob_class), max_size=6).map("".join)


@settings(max_examples=200, deadline=None)
@given(pattern=glob_pattern, text=st.text(alphabet=GLOB_CHARS, max_size=6))
def test_glob_matches_like_fnmatchcase(pattern: str, text: str) -> None:
    assert compile_glob(pattern).matches(text) == fnmatch.fnmatchcase(text, pattern)


# --- evaluate() and to_q() agree on the database ------------------------------------------------

AGENTS = ("support-bot", "browser-bot")
KEYS = ("a", "b", "tier")
NAMES = ("gpt-4o", "get_order", "issue_refund", "", "Get*[x]", "a.b")
TEXTS = ("vip", "true", "null", "1", "", "a*b", "a.b", "[x]", "\\", "é", "x\ny", "get_order")

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([0.5, 0.7, 1.0, -2.5, 1e-7, 2**53]),
    st.floats(min_value=-10, max_value=10, allow_nan=False),
    st.sampled_from(TEXTS),
)
json_value = st.recursive(
    scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=3),
    ),
    max_leaves=6,
)
metadata = st.dictionaries(st.sampled_from(KEYS), json_value, max_size=3)
step_facts = st.fixed_dictionaries(
    {
        "confidence": st.one_of(st.none(), st.sampled_from([0.0, 0.5, 0.7, 1.0]), st.floats(0, 1)),
        "kind": st.sampled_from(KINDS),
        "name": st.sampled_from(NAMES),
        "agent": st.sampled_from(AGENTS),
        "metadata": metadata,
    }
)

metadata_field = st.lists(st.sampled_from(KEYS), min_size=1, max_size=2).map(lambda p: "metadata." + ".".join(p))
glob_value = st.one_of(
    st.sampled_from(["*", "get_*", "?pt-4o", "a*", "[!v]*", "*.*", "[x]", "x?y", "[z-a]"]), glob_pattern
)
json_scalar_value = st.one_of(
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([0.5, 0.7, 1.0, -2.5, 1e-7, 2**53]),
    st.sampled_from(TEXTS),
)
number_value = st.one_of(st.integers(-5, 5), st.sampled_from([0.5, 0.7, 1.0, 1e-7]), st.floats(-10, 10))


def _condition(field: str, op: str, draw: st.DrawFn) -> dict:
    if op in ("exists", "missing"):
        return {"field": field, "op": op}
    if op in ("lt", "lte", "gt", "gte"):
        value = draw(number_value)
    elif op == "glob":
        value = draw(glob_value)
    elif field == "confidence":
        value = draw(number_value if op != "in" else st.lists(number_value, min_size=1, max_size=3))
    elif field == "kind":
        one = st.sampled_from(KINDS)
        value = draw(one if op != "in" else st.lists(one, min_size=1, max_size=3))
    elif field in ("name", "agent"):
        one = st.sampled_from(NAMES + AGENTS)
        value = draw(one if op != "in" else st.lists(one, min_size=1, max_size=3))
    else:
        value = draw(json_scalar_value if op != "in" else st.lists(json_scalar_value, min_size=1, max_size=3))
    return {"field": field, "op": op, "value": value}


@st.composite
def condition_lists(draw: st.DrawFn) -> list[dict]:
    conditions = []
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.one_of(st.sampled_from(["confidence", "kind", "name", "agent"]), metadata_field))
        allowed = [
            op
            for op in OPS
            if not (field in ("kind", "name", "agent") and op in ("lt", "lte", "gt", "gte"))
            and not (field == "confidence" and op == "glob")
        ]
        op = draw(st.sampled_from(allowed))
        conditions.append(_condition(field, op, draw))
    return validate_conditions(conditions)


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(step_facts, min_size=1, max_size=8), rule_sets=st.lists(condition_lists(), min_size=1, max_size=6))
def test_to_q_selects_exactly_the_steps_evaluate_matches(rows: list[dict], rule_sets: list[list[dict]]) -> None:
    with transaction.atomic():
        agents = {name: Agent.objects.get_or_create(name=name)[0] for name in AGENTS}
        steps = Step.objects.bulk_create(
            Step(
                agent=agents[row["agent"]],
                external_id=f"s{i}",
                kind=row["kind"],
                name=row["name"],
                confidence=row["confidence"],
                metadata=row["metadata"],
            )
            for i, row in enumerate(rows)
        )
        ids = {step.external_id: step.pk for step in steps}
        # Facts as routing sees them: read back from the database, as ingest stores them.
        stored = {s.pk: s for s in Step.objects.filter(pk__in=ids.values()).select_related("agent")}
        for conditions in rule_sets:
            expected = {
                pk
                for pk, s in stored.items()
                if evaluate(
                    conditions,
                    {
                        "confidence": s.confidence,
                        "kind": s.kind,
                        "name": s.name,
                        "agent": s.agent.name,
                        "metadata": s.metadata,
                    },
                )
                is not None
            }
            selected = set(
                Step.objects.filter(pk__in=ids.values()).filter(to_q(conditions)).values_list("pk", flat=True)
            )
            assert selected == expected, conditions
            negated = set(
                Step.objects.filter(pk__in=ids.values()).exclude(to_q(conditions)).values_list("pk", flat=True)
            )
            assert negated == set(stored) - expected, conditions
        transaction.set_rollback(True)
