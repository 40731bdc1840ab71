"""The long-poll GET /api/v1/steps/{id}/decision?wait=N (DESIGN §4): woken by a decision made in
this process, in another process (PostgreSQL NOTIFY, Redis pub/sub), by the SLA sweep; timeouts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings as django_settings
from django.db import connection
from django.test import AsyncClient
from django.utils import timezone
from django.utils.module_loading import import_string

from reviewqueue.core.models import ApiKey
from reviewqueue.hooks import notify
from reviewqueue.review.models import ReviewItem
from reviewqueue.review.services import apply_timeouts, claim_next_item, submit_review
from tests.factories import AgentFactory, QueueFactory, ReviewItemFactory, StepFactory, UserFactory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup(transactional_db):
    agent = AgentFactory(name="waiting-agent")
    key = ApiKey.issue(agent)[1]
    reviewer = UserFactory(username="rita")
    queue = QueueFactory(slug="blocking", members=[reviewer])
    step = StepFactory(agent=agent, blocking=True, output={"role": "assistant", "content": "refund 40 EUR"})
    item = ReviewItemFactory(queue=queue, step=step)
    return {"key": key, "reviewer": reviewer, "queue": queue, "step": step, "item": item}


def approve(queue_id: int, username: str) -> None:
    from django.contrib.auth import get_user_model

    from reviewqueue.review.models import Queue

    user = get_user_model().objects.get(username=username)
    item = claim_next_item(queue=Queue.objects.get(pk=queue_id), user=user)
    submit_review(item_id=item.pk, user=user, verdict="approve")


def wait_while(setup, action, *, wait: int = 10, delay: float = 0.4):
    """GET the decision with `wait`, run `action` (sync, in a thread) after `delay` seconds while
    the request is waiting; returns (response, seconds from the action to the answer)."""

    async def scenario():
        client = AsyncClient()
        task = asyncio.create_task(
            client.get(
                f"/api/v1/steps/{setup['step'].pk}/decision",
                {"wait": str(wait)},
                headers={"Authorization": f"Bearer {setup['key']}"},
            )
        )
        await asyncio.sleep(delay)
        assert not task.done(), "the long-poll answered before anything happened"
        started = time.monotonic()
        await sync_to_async(action, thread_sensitive=False)()
        response = await asyncio.wait_for(task, wait + 5)
        hub = notify.get_hub()
        return response, time.monotonic() - started, hub.waiting

    return async_to_sync(scenario)()


def test_waiter_is_woken_by_a_decision_in_this_process(setup) -> None:
    response, after, still_waiting = wait_while(setup, lambda: approve(setup["queue"].pk, "rita"), wait=20, delay=0.5)
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "approved" and body["output"] == {"role": "assistant", "content": "refund 40 EUR"}
    assert body["reviewer"] == "rita" and body["decided_at"]
    assert after < 10  # woken, long before the 20 s wait was over
    assert still_waiting == 0


def test_wait_times_out_with_pending(setup) -> None:
    async def scenario():
        start = time.monotonic()
        response = await AsyncClient().get(
            f"/api/v1/steps/{setup['step'].pk}/decision",
            {"wait": "1"},
            headers={"Authorization": f"Bearer {setup['key']}"},
        )
        return response, time.monotonic() - start

    response, elapsed = async_to_sync(scenario)()
    assert response.status_code == 200 and elapsed >= 1
    assert response.json() == {
        "status": "pending",
        "output": None,
        "reason": "",
        "reviewer": None,
        "decided_at": None,
        "escalated": False,
        "queue": "blocking",
    }


def test_sla_timeout_rejects_and_tells_the_waiting_agent(setup) -> None:
    queue = setup["queue"]
    queue.timeout_action = "reject"
    queue.save()
    ReviewItem.objects.filter(pk=setup["item"].pk).update(due_at=timezone.now() + timedelta(seconds=1))
    response, _, _ = wait_while(setup, lambda: apply_timeouts(timezone.now() + timedelta(seconds=2)), wait=20)
    assert response.json()["status"] == "rejected" and response.json()["reason"] == "SLA expired"


def test_sla_escalation_tells_the_waiting_agent_a_human_is_still_on_it(setup) -> None:
    senior = QueueFactory(slug="seniors")
    queue = setup["queue"]
    queue.timeout_action, queue.escalation_queue = "escalate", senior
    queue.save()
    ReviewItem.objects.filter(pk=setup["item"].pk).update(due_at=timezone.now() + timedelta(seconds=1))
    response, after, _ = wait_while(setup, lambda: apply_timeouts(timezone.now() + timedelta(seconds=2)), wait=20)
    body = response.json()
    assert body["status"] == "pending" and body["escalated"] is True and body["queue"] == "seniors"
    assert after < 10
    # The copy in the escalation queue keeps the agent's place at the front.
    assert ReviewItem.objects.get(queue=senior).blocking is True


def test_unauthenticated_and_foreign_steps(setup) -> None:
    async def get(path: str, **headers: str):
        return await AsyncClient().get(path, headers=headers)

    step = setup["step"]
    assert async_to_sync(get)(f"/api/v1/steps/{step.pk}/decision").status_code == 401
    other_key = ApiKey.issue(AgentFactory(name="someone-else"))[1]
    foreign = async_to_sync(get)(f"/api/v1/steps/{step.pk}/decision", Authorization=f"Bearer {other_key}")
    assert foreign.status_code == 404
    bad = async_to_sync(get)(f"/api/v1/steps/{step.pk}/decision", Authorization="Bearer rq_wrong")
    assert bad.status_code == 401 and bad.json()["detail"] == "Invalid API key."


def test_every_middleware_is_async_capable() -> None:
    """Under ASGI one sync-only middleware makes Django run each request in a thread, so every
    waiting agent would hold one: the long-poll relies on a fully async stack."""
    for path in django_settings.MIDDLEWARE:
        middleware = import_string(path)
        assert getattr(middleware, "async_capable", False), f"{path} is not async-capable"


DECIDE_SCRIPT = """
import django, sys
django.setup()
from django.contrib.auth import get_user_model
from reviewqueue.review.models import Queue
from reviewqueue.review.services import claim_next_item, submit_review
user = get_user_model().objects.get(username="rita")
item = claim_next_item(queue=Queue.objects.get(pk=int(sys.argv[1])), user=user)
submit_review(item_id=item.pk, user=user, verdict="correct", output={"role": "assistant", "content": "refund 20 EUR"})
"""


def decide_in_another_process(queue_id: int, extra_env: dict[str, str]) -> None:
    db = connection.settings_dict
    url = (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "reviewqueue.settings", **extra_env}
    subprocess.run([sys.executable, "-c", DECIDE_SCRIPT, str(queue_id)], cwd=ROOT, env=env, check=True, timeout=60)


@pytest.mark.postgres
def test_waiter_is_woken_by_a_decision_in_another_process_postgres_notify(setup) -> None:
    assert notify.transport() == "postgres"
    response, after, _ = wait_while(setup, lambda: decide_in_another_process(setup["queue"].pk, {}), wait=30, delay=0.5)
    body = response.json()
    assert body["status"] == "corrected" and body["output"] == {"role": "assistant", "content": "refund 20 EUR"}
    assert after < 20


@pytest.mark.postgres
@pytest.mark.redis
def test_waiter_is_woken_through_redis_pubsub(setup, settings) -> None:
    settings.REDIS_URL = os.environ["TEST_REDIS_URL"]
    prefix = f"test-{uuid.uuid4().hex}"
    settings.NOTIFY_CHANNEL_PREFIX = prefix
    assert notify.transport() == "redis"
    response, after, _ = wait_while(
        setup,
        lambda: decide_in_another_process(
            setup["queue"].pk,
            {"REDIS_URL": os.environ["TEST_REDIS_URL"], "NOTIFY_CHANNEL_PREFIX": prefix},
        ),
        wait=30,
        delay=0.5,
    )
    assert response.json()["status"] == "corrected" and after < 20


@pytest.mark.django_db
def test_the_openapi_schema_documents_the_long_poll_and_otlp(client) -> None:
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    assert paths["/api/v1/steps/{step_id}/decision"]["get"]["operationId"] == "steps_decision"
    assert paths["/v1/traces"]["post"]["operationId"] == "otlp_traces"


def test_a_waiting_request_gives_back_its_per_request_thread() -> None:
    """Under ASGI Django gives each request a ThreadSensitiveContext whose executor thread (made
    by the request_started signal) would idle for the whole wait; the view hands it back."""
    import threading

    from asgiref.sync import SyncToAsync, ThreadSensitiveContext

    from reviewqueue.api.decisions import release_request_thread

    async def scenario() -> tuple[bool, bool, str]:
        async with ThreadSensitiveContext():
            first = await sync_to_async(lambda: threading.current_thread().name)()  # like request_started
            context = SyncToAsync.thread_sensitive_context.get()
            had = context in SyncToAsync.context_to_thread_executor
            release_request_thread()
            gone = context not in SyncToAsync.context_to_thread_executor
            second = await sync_to_async(lambda: threading.current_thread().name)()  # like request_finished
            return had, gone, first != second

    # A thread of its own: no event loop (other tests' Playwright leaves one in this thread) and
    # no outer async_to_sync, exactly as under an ASGI server.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(lambda: asyncio.run(scenario())).result() == (True, True, True)
