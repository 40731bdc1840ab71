"""GET /api/v1/steps/{id}/decision?wait=SECONDS — the long-poll an agent blocks on (DESIGN §4).

An async view: under ASGI a waiting agent costs an `asyncio.Event` in the process's notify hub
(reviewqueue/hooks/notify.py), no thread and no polling. It answers as soon as the step is
decided, when it is escalated (`"status": "pending", "escalated": true`, so the agent knows a
human is still on it), or at the timeout with `"status": "pending"`.

DRF views are synchronous, so this one does the agent authentication of
`ApiKeyAuthentication` itself and answers in the API's error shape.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync, sync_to_async
from django.db import close_old_connections
from django.http import HttpRequest, JsonResponse
from rest_framework.exceptions import AuthenticationFailed, ValidationError

from reviewqueue.api.authentication import ApiKeyAuthentication
from reviewqueue.core.models import Agent, Step, StepStatus
from reviewqueue.hooks import notify
from reviewqueue.review.models import ItemStatus, ReviewItem
from reviewqueue.review.selectors import step_decision

T = TypeVar("T")
MAX_DECISION_WAIT_SECONDS = 60
AUTH = ApiKeyAuthentication()
MAX_ID = 2**63 - 1


def parse_wait(value: str | None) -> int:
    """`wait` seconds for the long-poll: an integer 0..60 (absent = 0)."""
    if value is None or value == "":
        return 0
    try:
        wait = int(value)
    except ValueError:
        raise ValidationError({"wait": [f"must be an integer from 0 to {MAX_DECISION_WAIT_SECONDS}"]}) from None
    if not 0 <= wait <= MAX_DECISION_WAIT_SECONDS:
        raise ValidationError({"wait": [f"must be an integer from 0 to {MAX_DECISION_WAIT_SECONDS}"]})
    return wait


class _NotFound(Exception):
    pass


def _error(status: int, detail: str, errors: Any = None) -> JsonResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def authenticate(request: HttpRequest) -> Agent | None:
    """The agent of the request's `Authorization: Bearer` key; None when there is no such header.
    Raises AuthenticationFailed for a bad key (the same checks and messages as the DRF views)."""
    header = request.headers.get("Authorization", "").split()
    if not header or header[0].lower() != "bearer":
        return None
    if len(header) != 2:
        raise AuthenticationFailed("Invalid Authorization header: expected 'Bearer <API key>'.")
    user, _key = AUTH.authenticate_key(header[1])
    return user.agent


def read_decision(agent: Agent, step_id: int) -> dict[str, Any]:
    """The decision body, with `escalated` and `queue` while the step is still pending."""
    step = (
        Step.objects.select_related("decision", "decision__reviewer")
        .only(
            "id",
            "agent_id",
            "status",
            "output",
            "created_at",
            "decision__output",
            "decision__reason",
            "decision__decided_at",
            "decision__reviewer__username",
        )
        .filter(pk=step_id, agent=agent)
        .first()
    )
    if step is None:
        raise _NotFound
    body = step_decision(step)
    if step.status == StepStatus.PENDING_REVIEW:
        items = list(ReviewItem.objects.filter(step_id=step.pk).order_by("id").values_list("status", "queue__slug"))
        body["escalated"] = any(status == ItemStatus.ESCALATED for status, _ in items)
        open_queues = [slug for status, slug in items if status in (ItemStatus.PENDING, ItemStatus.CLAIMED)]
        body["queue"] = open_queues[-1] if open_queues else None
    return body


def run_db(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Where the view's database work runs. Under ASGI (Django gives each request a
    ThreadSensitiveContext): in the loop's shared thread pool, so 1,000 waiting agents use a
    handful of threads and database connections, not one each; Django's request signals never
    run in those threads, so a too-old or broken connection is dropped first, as they would.
    Under WSGI (and the test client) the request already has its thread: that one."""
    if SyncToAsync.thread_sensitive_context.get(None) is None:
        return sync_to_async(fn)

    def pooled(*args: Any) -> T:
        close_old_connections()
        return fn(*args)

    return sync_to_async(pooled, thread_sensitive=False)


def _authenticate_and_read(request: HttpRequest, step_id: int) -> tuple[Agent, dict[str, Any]]:
    agent = authenticate(request)
    if agent is None:
        raise PermissionError
    return agent, read_decision(agent, step_id)


def release_request_thread() -> None:
    """Django runs each ASGI request in an asgiref ThreadSensitiveContext, whose one-thread
    executor (made for the request_started signal's sync receivers) would sit idle for the whole
    wait: one thread per waiting agent. Hand it back now; a later thread-sensitive call in this
    request (request_finished) gets a new one for a moment. The view's reads use the shared pool
    (`run_db`), so nothing else runs in that thread. Under WSGI there is none."""
    try:
        context = SyncToAsync.thread_sensitive_context.get(None)
        executor = SyncToAsync.context_to_thread_executor.pop(context, None) if context is not None else None
    except (AttributeError, TypeError):  # asgiref changed: keep the thread, lose nothing else
        return
    if executor is not None:
        executor.shutdown(wait=False)


async def step_decision_view(request: HttpRequest, step_id: int) -> JsonResponse:
    if step_id > MAX_ID:
        return _error(404, "No such step.")
    if request.method != "GET":
        return _error(405, f'Method "{request.method}" not allowed.')
    try:
        wait = parse_wait(request.GET.get("wait"))
    except ValidationError as exc:
        return _error(400, f"wait: {exc.detail['wait'][0]}", exc.detail)
    try:
        agent, body = await run_db(_authenticate_and_read)(request, step_id)
    except PermissionError:
        return _error(401, "An agent API key is required (Authorization: Bearer <API key>).")
    except AuthenticationFailed as exc:
        return _error(401, str(exc.detail))
    except _NotFound:
        return _error(404, "No such step.")
    if body["status"] != "pending" or wait == 0:
        return JsonResponse(body)

    deadline = time.monotonic() + wait
    release_request_thread()
    async with notify.get_hub().watch(step_id) as waiter:
        escalated = False
        while True:
            # Read after subscribing: a decision committed from here on wakes the waiter.
            body = await run_db(read_decision)(agent, step_id)
            if body["status"] != "pending" or escalated:
                return JsonResponse(body)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await waiter.wait(remaining):
                return JsonResponse(body)
            escalated = notify.ESCALATED in waiter.reasons
            waiter.reset()
