"""Hand-written SQL for hot paths, with the ORM's conversions: no query compilation per call.

The review hot paths (lock an item with its queue and step, record a verdict and its decision)
run on every verdict; the ORM spends more time compiling those small statements than the
database spends answering them. Here the SQL is written once; rows become model instances with
the conversions the ORM applies when reading (`from_db` plus the backend's and the fields'
converters) and values are prepared as it does when saving (`pre_save`, `get_db_prep_save`),
so the instances and the stored values are the same as through the ORM, on SQLite and
PostgreSQL alike. No signals are sent (the project has no model-save receivers).

Writes that do not read each other's results can go together (`run`): one round trip on
PostgreSQL instead of one per statement (a verdict's decision, step, item and audit events).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    attnames: list[str] = field(init=False, compare=False, repr=False)
    _converters: dict[str, tuple] = field(init=False, default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        kept = tuple(f for f in self.model._meta.concrete_fields if f.name not in self.skip)
        object.__setattr__(self, "fields", kept)
        object.__setattr__(self, "attnames", [f.attname for f in kept])

    @property
    def sql(self) -> str:
        """`alias.column, …` for a SELECT or RETURNING list (names from the model, not input)."""
        return ", ".join(f"{self.alias}.{f.column}" if self.alias else f.column for f in self.fields)

    def converters(self) -> tuple[tuple[int, Any, list[Any]], ...]:
        """(position, column, converters) of the fields that have converters on this database
        (the backend's and the field's, as the ORM applies them), worked out once per vendor."""
        cache = self._converters
        found = cache.get(connection.vendor)
        if found is None:
            table = self.model._meta.db_table
            found = []
            for i, f in enumerate(self.fields):
                col = f.get_col(table)
                converters = connection.ops.get_db_converters(col) + f.get_db_converters(connection)
                if converters:
                    found.append((i, col, converters))
            found = cache[connection.vendor] = tuple(found)
        return found

    def load(self, values: Sequence[Any]) -> models.Model:
        """An instance from this part of a row, converted as the ORM would."""
        converted = list(values)
        for i, col, converters in self.converters():
            for converter in converters:
                converted[i] = converter(converted[i], col, connection)
        return self.model.from_db(connection.alias, self.attnames, converted)


def load_row(row: Sequence[Any], *parts: Columns) -> tuple[list[models.Model], list[Any]]:
    """Split a row selected as `parts[0].sql, parts[1].sql, …, extra…` into instances and the
    extra values that follow them."""
    instances, position = [], 0
    for part in parts:
        instances.append(part.load(row[position : position + len(part.fields)]))
        position += len(part.fields)
    return instances, list(row[position:])


def cursor() -> Any:
    """A cursor for one statement of a hot path. On PostgreSQL it binds parameters on the server,
    so that psycopg prepares a statement it has run `prepare_threshold` times on the connection
    (settings: DB_PREPARED_STATEMENTS): parsed and planned once per connection, not on every call
    (for these small statements, planning cost the server more than running them). Elsewhere,
    and with prepared statements off, Django's own. Either way Django's wrapper: execute wrappers
    and query logging apply. Several statements in one string need Django's own (`run`)."""
    if (
        connection.vendor != "postgresql"
        or (connection.settings_dict.get("OPTIONS") or {}).get("prepare_threshold") is None
    ):
        return connection.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        return connection._prepare_cursor(ServerBindingCursor(connection.connection))


@contextlib.contextmanager
def pipelined() -> Iterator[None]:
    """PostgreSQL: what runs inside goes to the server in one go (psycopg's pipeline mode),
    together with the BEGIN that psycopg sends before a transaction's first statement (otherwise
    a round trip of its own); results are read when the block ends, so fetch after it. Errors
    raise as Django's. Elsewhere: nothing."""
    if connection.vendor != "postgresql":
        yield
        return
    connection.ensure_connection()
    with connection.wrap_database_errors, connection.connection.pipeline():
        yield


def fetch_one(sql: str, params: Sequence[Any], *parts: Columns) -> list[models.Model] | None:
    """Run `sql` (selecting `parts[0].sql, parts[1].sql, …`) and load its first row's instances,
    or None when it returns no row."""
    with cursor() as cursor_:
        cursor_.execute(sql, params)
        row = cursor_.fetchone()
    return None if row is None else load_row(row, *parts)[0]


@dataclass(frozen=True)
class Joined:
    """A query run for the row a statement writes, in that statement (`LEFT JOIN LATERAL`), so
    that what a caller reads about the row costs no round trip of its own. `sql` is a SELECT
    that names the written row `written`; its rows come back as plain tuples."""

    sql: str
    params: list[Any]


@dataclass(frozen=True)
class Statement:
    """One write for `run`: its SQL and parameters, and what to do with the rows it returns."""

    sql: str
    params: list[Any]
    returned: Callable[[list[tuple[Any, ...]]], None] | None = None


def run(*statements: Statement) -> None:
    """Run writes in order, in one round trip on PostgreSQL (its client-side binding cursor,
    Django's default, sends `a; b; c` as one query and reads each statement's result in turn),
    one by one elsewhere (and with server-side binding). A failing statement raises as if run
    alone; inside a transaction, the caller's `atomic` undoes the ones before it."""
    statements = tuple(st for st in statements if st.sql)
    if not statements:
        return
    together = len(statements) > 1 and batches()
    with connection.cursor() if together else cursor() as cursor_:
        if together:
            # Each statement bound on its own (psycopg caches the parse of a short statement's
            # placeholders, not of a long batch's), then sent as one string without parameters.
            cursor_.execute("; ".join(cursor_.cursor.mogrify(st.sql, st.params) for st in statements))
        for i, st in enumerate(statements):
            if not together:
                cursor_.execute(st.sql, st.params)
            elif i:
                cursor_.nextset()
            if st.returned is not None:
                st.returned(cursor_.fetchall())


def batches() -> bool:
    """Whether `run` sends several statements in one round trip here: PostgreSQL through Django's
    default cursor, which binds parameters on the client (`OPTIONS["server_side_binding"]` turns
    that off)."""
    options = connection.settings_dict.get("OPTIONS") or {}
    return connection.vendor == "postgresql" and not options.get("server_side_binding")


def _stored_fields(model: type[models.Model]) -> list[Any]:
    """The columns an INSERT writes: every concrete field but the (database-made) primary key."""
    return [f for f in model._meta.concrete_fields if not f.primary_key]


def _stored_values(obj: models.Model, fields: Sequence[Any], *, add: bool) -> list[Any]:
    """`obj`'s values for `fields` as the ORM saves them (`pre_save`, then `get_db_prep_save`)."""
    return [f.get_db_prep_save(f.pre_save(obj, add), connection) for f in fields]


def insert_statement(objs: Sequence[models.Model]) -> Statement:
    """The INSERT of unsaved instances of one model in one statement (VALUES rows; no UNNEST,
    which PostgreSQL plans slowly for JSON arrays); running it sets their primary keys from
    RETURNING. No instances: no statement (`run` skips it)."""
    if not objs:
        return Statement("", [])
    meta = objs[0]._meta
    fields = _stored_fields(type(objs[0]))
    row = f"({', '.join(['%s'] * len(fields))})"
    params: list[Any] = []
    for obj in objs:
        params += _stored_values(obj, fields, add=True)
    sql = (
        f"INSERT INTO {meta.db_table} ({', '.join(f.column for f in fields)})"
        f" VALUES {', '.join([row] * len(objs))} RETURNING {meta.pk.column}"
    )
    return Statement(sql, params, _saved(objs))


def _saved(objs: Sequence[models.Model]) -> Callable[[list[tuple[Any, ...]]], None]:
    """Marks the instances saved, with the primary keys an INSERT … RETURNING gave them."""

    def saved(returned: list[tuple[Any, ...]]) -> None:
        for obj, (pk,) in zip(objs, returned, strict=True):
            obj.pk = pk
            obj._state.adding, obj._state.db = False, connection.alias

    return saved


def insert_select_statement(obj: models.Model, source: str, expressions: Mapping[str, str]) -> Statement:
    """The INSERT of one unsaved instance as `INSERT … SELECT … FROM source`, one row per row of
    `source` (PostgreSQL: a data-modifying CTE of the same statement), with the fields named in
    `expressions` (attnames) taken from those SQL expressions over `source` instead of the
    instance. Running it alone sets the primary key, as `insert_statement` does."""
    meta = obj._meta
    fields = _stored_fields(type(obj))
    values = [expressions.get(f.attname, "%s") for f in fields]
    params = _stored_values(obj, [f for f in fields if f.attname not in expressions], add=True)
    sql = (
        f"INSERT INTO {meta.db_table} ({', '.join(f.column for f in fields)})"
        f" SELECT {', '.join(values)} FROM {source} RETURNING {meta.pk.column}"
    )
    return Statement(sql, params, _saved([obj]))


def insert(objs: Sequence[models.Model]) -> None:
    """INSERT unsaved instances of one model in one statement and set their primary keys."""
    run(insert_statement(objs))


def load_many(objs: Sequence[models.Model]) -> None:
    """Add many new rows of one model, fast, setting no primary keys: PostgreSQL's COPY (the
    bulk path for big JSON rows: no SQL text to build, parse or plan), `bulk_create` elsewhere."""
    if not objs:
        return
    model = type(objs[0])
    if connection.vendor != "postgresql":
        model._default_manager.bulk_create(objs)
        return
    fields = _stored_fields(model)
    sql = f"COPY {model._meta.db_table} ({', '.join(f.column for f in fields)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for obj in objs:
            copy.write_row(_stored_values(obj, fields, add=True))


def update_statement(obj: models.Model, fields: Sequence[str]) -> Statement:
    """The UPDATE of the named fields of a saved instance (its current values), by primary key."""
    meta = obj._meta
    targets = [meta.get_field(name) for name in fields]
    sql = f"UPDATE {meta.db_table} SET {', '.join(f'{f.column} = %s' for f in targets)} WHERE {meta.pk.column} = %s"
    return Statement(sql, [*_stored_values(obj, targets, add=False), obj.pk])


def update(obj: models.Model, fields: Sequence[str]) -> None:
    """UPDATE the named fields of a saved instance (its current values), by primary key."""
    run(update_statement(obj, fields))
