"""Agents' steps are untrusted JSON: an input whose messages have a role that is not a string
(a list, an object, a number) or no role at all must still export in every format, with the
message read as a user's."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evals.cases import Case, normalize_input, normalize_output
from evals.formats import NAMES, ExportContext, get_format

ODD_ROLES = [[], ["user"], {"a": 1}, 7, None, "", True]


@pytest.mark.parametrize("role", ODD_ROLES, ids=repr)
def test_a_role_that_is_not_a_string_is_read_as_a_user(role):
    messages, _ = normalize_input([{"role": role, "content": "hello"}])
    assert messages == [{"role": "user", "content": "hello"}]


def case_from(value, output="Fine.", verdict="approved") -> Case:
    messages, tools = normalize_input(value)
    expected = normalize_output(output)
    return Case(1, 1, "agent", "queue", "llm", "", verdict, False, "", messages, tools, expected, None, "train")


json_values = st.recursive(
    # integers as orjson reads them from the database (a larger one becomes a float)
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["role", "content", "x"]), inner),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.fixed_dictionaries({"role": json_values, "content": json_values}), min_size=1, max_size=3))
def test_every_format_takes_any_message_shape(tmp_path_factory, messages):
    ctx = ExportContext(out_dir=tmp_path_factory.mktemp("out"))
    case = case_from(messages)
    for name in NAMES:
        produced = get_format(name).records(case, ctx)  # a list of records, or why it was skipped
        assert isinstance(produced, list | str), name
