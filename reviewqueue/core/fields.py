"""Model fields of our own."""

from __future__ import annotations

from typing import Any

from django.db import models


class WholeJSONField(models.JSONField):
    """A JSONField for JSON that is stored and read whole, never queried inside: a step's input
    and output. On PostgreSQL its column is `json`, not `jsonb`: reading a `jsonb` value as text
    renders it anew each time (about 2.6 µs for a typical 800-byte step input, the largest cost
    of an export in the database), while `json` keeps the text it was given. Values are still
    sent as `jsonb` (Django's adapter) and converted by PostgreSQL's assignment cast, so the
    text kept is exactly what `jsonb` would render: keys in jsonb's order, no duplicates, the
    bytes a `jsonb` column gave. Reads come back as text, parsed as for jsonb (`json_as_text`). The
    jsonb-only lookups (`contains`, `has_key`) do not apply; key transforms do. On other
    databases it is a plain JSONField."""

    def db_type(self, connection: Any) -> str | None:
        return "json" if connection.vendor == "postgresql" else super().db_type(connection)


def json_as_text(sender: Any, connection: Any, **kwargs: Any) -> None:
    """`connection_created`: on PostgreSQL, load `json` values as text, as Django does for
    `jsonb` (JSONField parses the text itself; psycopg would otherwise parse it first)."""
    if connection.vendor != "postgresql":
        return
    from psycopg.types.string import TextBinaryLoader, TextLoader

    connection.connection.adapters.register_loader("json", TextLoader)
    connection.connection.adapters.register_loader("json", TextBinaryLoader)
