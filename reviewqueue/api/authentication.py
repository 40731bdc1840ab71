"""Agent authentication: `Authorization: Bearer <API key>`.

Agent endpoints use only this class (never reviewer tokens or sessions) and the `IsAgent`
permission, so `request.auth` is always the `ApiKey` and `request.auth.agent` the agent there.
`request.user` is an `AgentUser`: authenticated for DRF, but no Django user, no staff, no
permissions, so it can never pass a reviewer or admin check by accident.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from reviewqueue.core import rows
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


_KEY = rows.Columns(ApiKey, "k")
_KEY_AGENT = rows.Columns(Agent, "a")


def api_key_by_hash(key_hash: str) -> ApiKey | None:
    """The key with this hash, its agent loaded, in one query: the same instances as
    `ApiKey.objects.select_related("agent").filter(key_hash=...)`, but this runs on every agent
    request and the ORM took several times the query's own time to compose it."""
    sql = (
        f"SELECT {_KEY.sql}, {_KEY_AGENT.sql} FROM {ApiKey._meta.db_table} k"
        f" JOIN {Agent._meta.db_table} a ON a.id = k.agent_id WHERE k.key_hash = %s"
    )
    found = rows.fetch_one(sql, [key_hash], _KEY, _KEY_AGENT)
    if found is None:
        return None
    key, agent = found
    key.agent = agent
    return key


_TOKEN = rows.Columns(Token, "t")
_TOKEN_USER = rows.Columns(get_user_model(), "u")


class ReviewerTokenAuthentication(authentication.TokenAuthentication):
    """DRF's `Authorization: Token <key>` for reviewers and staff, with the token and its user
    read in one hand-written query (every reviewer API request pays for this lookup)."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        sql = (
            f"SELECT {_TOKEN.sql}, {_TOKEN_USER.sql} FROM {Token._meta.db_table} t"
            f" JOIN {_TOKEN_USER.model._meta.db_table} u ON u.id = t.user_id WHERE t.key = %s"
        )
        found = rows.fetch_one(sql, [key], _TOKEN, _TOKEN_USER)
        if found is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        token, user = found
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        token.user = user
        return user, token


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
