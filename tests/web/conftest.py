"""Fixtures for the reviewer UI's view tests."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import QueueFactory, UserFactory


@pytest.fixture(autouse=True)
def _hosts(settings) -> None:
    settings.ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]


@pytest.fixture
def reviewer(db):
    return UserFactory(username="rita")


@pytest.fixture
def outsider(db):
    return UserFactory(username="otto")


@pytest.fixture
def queue(reviewer):
    return QueueFactory(
        slug="answers",
        name="Support answers",
        members=[reviewer],
        instructions="Check the **answer**. <script>alert(1)</script>",
        rubric=[{"name": "tone", "type": "choice", "options": ["good", "poor"]}, {"name": "score", "type": "rating"}],
    )


@pytest.fixture
def client_for():
    def make(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def rita(client_for, reviewer) -> Client:
    return client_for(reviewer)


@pytest.fixture
def htmx() -> dict[str, str]:
    return {"HTTP_HX_REQUEST": "true"}
