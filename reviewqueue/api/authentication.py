"""Agent authentication: `Authorization: Bearer <API key>`.

Agent endpoints use only this class (never reviewer tokens or sessions) and the `IsAgent`
permission, so `request.auth` is always the `ApiKey` and `request.auth.agent` the agent there.
`request.user` is an `AgentUser`: authenticated for DRF, but no Django user, no staff, no
permissions, so it can never pass a reviewer or admin check by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import Any

from django.db import connections
from django.db.models import Q
from django.db.models.expressions import Col
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from reviewqueue.core.models import Agent, ApiKey, hash_api_key

# last_used_at is written at most this often per key, so a busy agent costs no extra writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class AgentUser:
    """The `request.user` of an agent request: authenticated, never staff, holds no permissions."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.username = f"agent:{agent.name}"

    def __str__(self) -> str:
        return self.username

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def has_perms(self, perms: object, obj: object = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[AgentUser, ApiKey] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None  # not ours: the request stays unauthenticated -> 401
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header: expected 'Bearer <API key>'.")
        try:
            raw_key = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        return self.authenticate_key(raw_key)

    def authenticate_key(self, raw_key: str) -> tuple[AgentUser, ApiKey]:
        key = api_key_by_hash(hash_api_key(raw_key))
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed(f"API key {key.prefix}… was revoked.")
        touch_api_key(key)
        return AgentUser(key.agent), key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


def api_key_by_hash(key_hash: str, using: str = "default") -> ApiKey | None:
    """The key with this hash, its agent loaded, in one query: the same rows as
    `ApiKey.objects.select_related("agent").filter(key_hash=...)`, but this runs on every agent
    request and the ORM took several times the query's own time to compose it."""
    connection = connections[using]
    sql, columns, key_count = _api_key_query(using)
    with connection.cursor() as cursor:
        cursor.execute(sql, [key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for index, (col, converters) in enumerate(columns):
        for convert in converters:  # as the ORM applies them (e.g. datetimes on SQLite)
            values[index] = convert(values[index], col, connection)
    key = ApiKey.from_db(using, None, values[:key_count])
    key.agent = Agent.from_db(using, None, values[key_count:])
    return key


@cache
def _api_key_query(using: str) -> tuple[str, list[tuple[Col, list[Callable[..., Any]]]], int]:
    """The SQL of `api_key_by_hash` (every column of the key, then every column of its agent),
    each column's converters, and the number of key columns. Built once per database."""
    connection = connections[using]
    qn = connection.ops.quote_name
    key_fields, agent_fields = ApiKey._meta.concrete_fields, Agent._meta.concrete_fields
    cols = [f.get_col("k") for f in key_fields] + [f.get_col("a") for f in agent_fields]
    agent_column = qn(ApiKey._meta.get_field("agent").column)
    hash_column = qn(ApiKey._meta.get_field("key_hash").column)
    sql = (
        f"SELECT {', '.join(f'{col.alias}.{qn(col.target.column)}' for col in cols)} "
        f"FROM {qn(ApiKey._meta.db_table)} k "
        f"INNER JOIN {qn(Agent._meta.db_table)} a ON a.{qn(Agent._meta.pk.column)} = k.{agent_column} "
        f"WHERE k.{hash_column} = %s"
    )
    columns = [(col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)) for col in cols]
    return sql, columns, len(key_fields)


def touch_api_key(key: ApiKey) -> None:
    """Record use, at most once per LAST_USED_RESOLUTION (a conditional UPDATE, so concurrent
    requests don't all write)."""
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    key.last_used_at = now


class IsAgent(permissions.BasePermission):
    """Only requests authenticated with an agent API key."""

    message = "An agent API key is required (Authorization: Bearer <API key>)."

    def has_permission(self, request: Request, view: object) -> bool:
        return isinstance(request.auth, ApiKey)


def request_agent(request: Request) -> Agent:
    """The agent of a request that passed IsAgent."""
    assert isinstance(request.auth, ApiKey)
    return request.auth.agent


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents ApiKeyAuthentication in the OpenAPI schema as HTTP bearer auth."""

    target_class = ApiKeyAuthentication
    name = "agentApiKey"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An agent API key (manage.py create_api_key)."}
