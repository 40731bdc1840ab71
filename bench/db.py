"""A fresh PostgreSQL database for each run, and fast bulk inserts for the big fixtures."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rq_bench"


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def recreate_database(url: str) -> None:
    """DROP and CREATE the database named in `url` (connecting to the `postgres` database)."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit(f"bench runs on PostgreSQL only; DATABASE_URL is {url!r}")
    host = parts.hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1", ""):
        raise SystemExit(f"bench only talks to a local PostgreSQL; DATABASE_URL host is {host!r}")
    name = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def insert_rows(
    model: type,
    count: int,
    columns: dict[str, str],
    params: list | None = None,
    *,
    source: str = "",
    source_params: list | None = None,
) -> None:
    """INSERT `count` rows with one `INSERT ... SELECT ... FROM generate_series(1, count) AS g
    ... ORDER BY g`.

    `columns` maps column names to SQL expressions, which may use `g` (the row number, 1..count)
    and %s placeholders filled from `params` in the order of `columns`. `source` adds joins
    after the series (e.g. "JOIN core_step s ON ..."), with its own `source_params`. Every other
    NOT NULL column gets the model field's Python default, so this keeps working when a field
    is added."""
    from django.db import connection

    known = {field.column for field in model._meta.concrete_fields}
    unknown = set(columns) - known
    if unknown:
        raise ValueError(f"{model.__name__} has no columns {sorted(unknown)}")
    names, expressions, values = list(columns), list(columns.values()), list(params or [])
    for field in model._meta.concrete_fields:
        if field.primary_key or field.column in columns or field.null:
            continue
        if not field.has_default() and not field.empty_strings_allowed:
            raise ValueError(f"{model.__name__}.{field.name} is NOT NULL without a default: give it")
        names.append(field.column)
        expressions.append("%s")
        values.append(field.get_db_prep_save(field.get_default(), connection))
    # ORDER BY g: rows get their ids in the order of g, as ids follow arrival on a live system
    # (a step's review item is made as the step arrives, its reviews and decision after it).
    # Without it a joined insert numbers its rows in the join's order, and the ids of a run of
    # steps' items, reviews and decisions scatter over their tables, as they never do live.
    statement = (
        "INSERT INTO {table} ({cols}) SELECT {exprs} FROM generate_series(1, %s) AS g {source} ORDER BY g".format(
            table=connection.ops.quote_name(model._meta.db_table),
            cols=", ".join(connection.ops.quote_name(n) for n in names),
            exprs=", ".join(expressions),
            source=source,
        )
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [*values, count, *(source_params or [])])
