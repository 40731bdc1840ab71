"""Model instances from hand-written SQL that reads several tables in one statement.

The review hot paths (lock an item with its queue and step, claim the next item) run on every
verdict; the ORM spends more time compiling those queries than the database spends answering
them. Here the SQL is written once and each row is turned into model instances with the same
conversions the ORM applies (`from_db` plus the backend's and the fields' converters), so
instances behave exactly like ORM-loaded ones, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, models


@dataclass(frozen=True)
class Columns:
    """The concrete columns of `model` (minus `skip`, loaded on access like deferred fields) read
    under the SQL table alias `alias`, in the model's field order."""

    model: type[models.Model]
    alias: str
    skip: tuple[str, ...] = ()
    fields: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        kept = tuple(f for f in self.model._meta.concrete_fields if f.name not in self.skip)
        object.__setattr__(self, "fields", kept)

    @property
    def sql(self) -> str:
        """`alias.column, …` for a SELECT or RETURNING list (names from the model, not input)."""
        return ", ".join(f"{self.alias}.{f.column}" if self.alias else f.column for f in self.fields)

    def load(self, values: Sequence[Any]) -> models.Model:
        """An instance from this part of a row, converted as the ORM would."""
        converted = list(values)
        table = self.model._meta.db_table
        for i, f in enumerate(self.fields):
            col = f.get_col(table)
            for converter in connection.ops.get_db_converters(col) + f.get_db_converters(connection):
                converted[i] = converter(converted[i], col, connection)
        return self.model.from_db(connection.alias, [f.attname for f in self.fields], converted)


def load_row(row: Sequence[Any], *parts: Columns) -> tuple[list[models.Model], list[Any]]:
    """Split a row selected as `parts[0].sql, parts[1].sql, …, extra…` into instances and the
    extra values that follow them."""
    instances, position = [], 0
    for part in parts:
        instances.append(part.load(row[position : position + len(part.fields)]))
        position += len(part.fields)
    return instances, list(row[position:])
