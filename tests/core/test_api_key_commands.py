"""`create_api_key` and `revoke_api_key`, and the admin pages for the core models."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from reviewqueue.core.models import Agent, ApiKey, AuditEvent, hash_api_key
from tests.factories import AgentFactory, StepFactory, UserFactory

pytestmark = pytest.mark.django_db


def create_key(**options: str) -> tuple[str, str]:
    out = io.StringIO()
    call_command("create_api_key", stdout=out, **options)
    text = out.getvalue()
    return text, text.strip().splitlines()[-1]


def test_create_api_key_creates_the_agent_and_prints_the_key_last() -> None:
    text, raw = create_key(agent="new-bot", name="prod")
    agent = Agent.objects.get(name="new-bot")
    key = ApiKey.objects.get(agent=agent)
    assert key.key_hash == hash_api_key(raw) and key.name == "prod" and raw.startswith(key.prefix)
    assert "new-bot" in text and len(text.strip().splitlines()) > 1
    assert AuditEvent.objects.filter(action="api_key.created").count() == 1
    # the key works on the agent API
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert c.get("/api/v1/steps").status_code == 200


def test_create_api_key_reuses_an_existing_agent() -> None:
    AgentFactory(name="bot")
    _, first = create_key(agent="bot")
    _, second = create_key(agent="bot")
    assert first != second
    assert Agent.objects.filter(name="bot").count() == 1 and ApiKey.objects.count() == 2


def test_revoke_api_key_by_prefix() -> None:
    _, raw = create_key(agent="bot")
    key = ApiKey.objects.get()
    out = io.StringIO()
    call_command("revoke_api_key", key.prefix, stdout=out)
    key.refresh_from_db()
    assert key.revoked_at is not None and "Revoked" in out.getvalue()
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert c.get("/api/v1/steps").status_code == 401
    with pytest.raises(CommandError, match="no API key"):
        call_command("revoke_api_key", "rq_doesnotexist", stdout=io.StringIO())


@pytest.mark.parametrize(
    "url", ["/admin/core/agent/", "/admin/core/step/", "/admin/core/auditevent/", "/admin/core/attachment/"]
)
def test_admin_pages_load(client, url: str) -> None:
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    step = StepFactory()
    client.force_login(admin)
    assert client.get(url).status_code == 200
    assert client.get(f"/admin/core/step/{step.pk}/change/").status_code == 200
    assert client.get(f"/admin/core/agent/{step.agent_id}/change/").status_code == 200
    assert client.get("/admin/core/auditevent/add/").status_code == 403
