"""Shared fixtures: users, agents, queues. Factories live in tests/factories.py."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from tests.consumers import OAIEVAL, PROMPTFOO
from tests.factories import QueueFactory, UserFactory


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `postgres` need PostgreSQL; on SQLite they are deselected (not skipped),
    so the summary stays honest. CI runs the suite with DATABASE_URL on PostgreSQL. Tests marked
    `redis` run only when TEST_REDIS_URL names a Redis to use (e.g. redis://127.0.0.1:6379/0).
    Tests marked `promptfoo` and `oaievals` need the export consumers that scripts/test.sh
    installs into .consumers/ (promptfoo with npm where Node.js is new enough; OpenAI Evals in a
    venv of its own); in CI they always run (and fail if one is missing)."""
    on_postgres = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    with_redis = bool(os.environ.get("TEST_REDIS_URL"))
    in_ci = bool(os.environ.get("CI"))
    with_promptfoo = in_ci or PROMPTFOO.exists()
    with_oaievals = in_ci or OAIEVAL.exists()
    keep, drop = [], []
    for item in items:
        unavailable = (
            (item.get_closest_marker("postgres") and not on_postgres)
            or (item.get_closest_marker("redis") and not with_redis)
            or (item.get_closest_marker("promptfoo") and not with_promptfoo)
            or (item.get_closest_marker("oaievals") and not with_oaievals)
        )
        (drop if unavailable else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _media_root(tmp_path, settings) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def on_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


# People and a queue that the review and API tests share (a test module may define its own).
@pytest.fixture
def alice():
    return UserFactory(username="alice")


@pytest.fixture
def bob():
    return UserFactory(username="bob")


@pytest.fixture
def boss():
    return UserFactory(username="boss", is_staff=True)


@pytest.fixture
def queue(alice, bob):
    return QueueFactory(slug="answers", members=[alice, bob])
