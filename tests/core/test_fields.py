"""`WholeJSONField`: a step's input and output, stored as PostgreSQL `json` (kept as text, not
re-rendered on every read) with the very text `jsonb` would render, read back as the same values
through every path (the ORM, `values_list`, the hand-written rows of `rows.Columns`)."""

from __future__ import annotations

import pytest
from django.db import connection

from reviewqueue.core import rows
from reviewqueue.core.models import Step
from tests.factories import StepFactory

pytestmark = pytest.mark.django_db

VALUES = [
    {"messages": [{"role": "user", "content": "Où est ma commande ? 🚚"}], "tools": [{"type": "function"}]},
    [{"role": "user", "content": 'a "quoted" \\ line\nnext\u0001'}],
    "[1, 2]",  # a string that reads as JSON stays a string
    "42",
    "",
    42,
    1.5,
    True,
    [],
    {},
    {"b": 1, "a": {"z": None, "aa": [1.25, -3, "x"]}},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_input_and_output_read_back_as_the_values_stored(value) -> None:
    step = StepFactory(input=value, output=value)
    again = Step.objects.get(pk=step.pk)
    assert (again.input, again.output) == (value, value)
    assert type(again.input) is type(value)
    assert list(Step.objects.filter(pk=step.pk).values_list("input", "output")) == [(value, value)]
    columns = rows.Columns(Step, "s")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns.sql} FROM {Step._meta.db_table} s WHERE s.id = %s", [step.pk])
        loaded = columns.load(cursor.fetchone())
    assert (loaded.input, loaded.output) == (value, value)


def test_sql_null_and_json_null_are_none() -> None:
    step = StepFactory(input=None, output=None)
    again = Step.objects.get(pk=step.pk)
    assert (again.input, again.output) == (None, None)


@pytest.mark.postgres
def test_postgresql_keeps_the_text_jsonb_renders_in_a_json_column() -> None:
    value = {"tools": [{"type": "function"}], "messages": [{"content": "hé", "role": "user"}], "a": 1}
    step = StepFactory(input=value, output={"role": "assistant", "content": "x"})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = %s AND column_name IN ('input', 'output')",
            [Step._meta.db_table],
        )
        assert [row[0] for row in cursor.fetchall()] == ["json", "json"]
        cursor.execute(f"SELECT input::text, input::jsonb::text FROM {Step._meta.db_table} WHERE id = %s", [step.pk])
        kept, rendered = cursor.fetchone()
    # jsonb's order (shorter keys first), its spacing, unicode as is: what exports hash and cut.
    assert kept == rendered
    assert kept == '{"a": 1, "tools": [{"type": "function"}], "messages": [{"role": "user", "content": "hé"}]}'
