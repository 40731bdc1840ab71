"""Wake agents waiting on a step (the long-poll of GET /api/v1/steps/{id}/decision), across processes.

Publishing: on the `postgres` transport the wake-up is a NOTIFY that goes with the transaction
that decided (or escalated) the step (`publish_statement`), delivered at its commit; on the
others the review signals call `publish(step_id, event)` after the commit. The message travels
by, in order of preference:

- Redis pub/sub, when `REDIS_URL` is set;
- PostgreSQL `LISTEN/NOTIFY`, on PostgreSQL;
- nothing at all on SQLite: waiters in this process are woken directly, and the hub of each
  process polls the database once a second for the steps it has waiters on (one query for all
  of them), so decisions made by other processes (the task worker's SLA sweep) arrive too.

Waiting: each event loop (one per ASGI server process) has one `Hub` with one listener task and
one connection, which fans each message out to the waiters of that step. A waiter is an
`asyncio.Event`: waiting costs no thread, no connection and no polling loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from reviewqueue.core import rows

logger = logging.getLogger(__name__)

DECIDED = "decided"
ESCALATED = "escalated"
POLL_INTERVAL_SECONDS = 1.0
RECONNECT_SECONDS = (0.5, 1, 2, 5, 10)
READY_TIMEOUT_SECONDS = 5.0


def channel_name() -> str:
    """The PostgreSQL channel / Redis channel. A PostgreSQL channel is per database already;
    the Redis one carries a prefix (NOTIFY_CHANNEL_PREFIX) so that several installations or test
    runs can share one Redis."""
    return f"{getattr(settings, 'NOTIFY_CHANNEL_PREFIX', 'reviewqueue')}_steps"


def transport() -> str:
    if getattr(settings, "REDIS_URL", ""):
        return "redis"
    if connection.vendor == "postgresql":
        return "postgres"
    return "local"


# --- publishing -----------------------------------------------------------------------------------

_redis_client: Any = None
_redis_lock = threading.Lock()


def _redis() -> Any:
    global _redis_client
    with _redis_lock:
        if _redis_client is None:
            import redis

            _redis_client = redis.Redis.from_url(settings.REDIS_URL)
        return _redis_client


def publishes_in_transaction() -> bool:
    """Whether the wake-up is a statement that goes with the deciding transaction (a NOTIFY,
    delivered at its commit: `publish_statement`) rather than `publish` after the commit."""
    return transport() == "postgres"


def publish_statement(step_id: int, event: str = DECIDED) -> rows.Statement | None:
    """PostgreSQL transport: the NOTIFY of `publish` as a `rows.Statement`, to go with other
    statements in one round trip (`hooks.receivers`); None on the other transports."""
    if not publishes_in_transaction():
        return None
    return rows.Statement("SELECT pg_notify(%s, %s)", [channel_name(), f"{event}:{step_id}"])


def publish(step_id: int, event: str = DECIDED) -> None:
    """Tell every waiter on `step_id`, in every process. Call it after the commit
    (`hooks.receivers`, from the review signals sent then). Never raises: a lost wake-up costs the agent
    at most its wait timeout, never a wrong answer."""
    payload = f"{event}:{step_id}"
    try:
        kind = transport()
        if kind == "redis":
            _redis().publish(channel_name(), payload)
        elif kind == "postgres":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [channel_name(), payload])
        else:
            for hub in list(_hubs.values()):
                hub.dispatch_threadsafe(payload)
    except Exception:  # pragma: no cover - logged; the waiter times out and re-reads
        logger.exception("could not publish %s", payload)


# --- waiting --------------------------------------------------------------------------------------


@dataclass(eq=False)
class Waiter:
    step_id: int
    event: asyncio.Event = field(default_factory=asyncio.Event)
    reasons: set[str] = field(default_factory=set)

    async def wait(self, timeout: float) -> bool:
        """True when woken before `timeout` seconds."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def reset(self) -> None:
        self.event.clear()
        self.reasons.clear()


class Hub:
    """The waiters of one event loop and the one listener that wakes them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiters: dict[int, set[Waiter]] = defaultdict(set)
        self.ready = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.kind = transport()

    # fan-out
    def dispatch(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            payload = payload.decode()
        event, _, raw_id = payload.partition(":")
        try:
            step_id = int(raw_id)
        except ValueError:
            return
        for waiter in self.waiters.get(step_id, ()):
            waiter.reasons.add(event)
            waiter.event.set()

    def dispatch_threadsafe(self, payload: str) -> None:
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self.dispatch, payload)

    def wake_all(self) -> None:
        """After a reconnection messages may have been missed: everyone re-reads."""
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.event.set()

    @contextlib.asynccontextmanager
    async def watch(self, step_id: int) -> AsyncIterator[Waiter]:
        """Register a waiter on `step_id`; once this yields, the listener is subscribed, so a
        decision committed after the caller's next read cannot be missed."""
        waiter = Waiter(step_id)
        self.waiters[step_id].add(waiter)
        try:
            self._ensure_listener()
            if not self.ready.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT_SECONDS)
            yield waiter
        finally:
            waiters = self.waiters.get(step_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self.waiters[step_id]

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self.waiters.values())

    # the listener
    def _ensure_listener(self) -> None:
        if self.task is None or self.task.done():
            # A fresh context: the listener outlives the request that started it (and must not
            # inherit its asgiref ThreadSensitiveContext).
            self.task = self.loop.create_task(
                self._run(), name=f"reviewqueue-notify-{self.kind}", context=contextvars.Context()
            )

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                if self.kind == "redis":
                    await self._listen_redis()
                elif self.kind == "postgres":
                    await self._listen_postgres()
                else:
                    await self._poll()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("notify listener (%s) lost its connection; reconnecting", self.kind, exc_info=True)
            self.ready.clear()
            self.wake_all()
            await asyncio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
            attempt += 1

    def _subscribed(self) -> None:
        self.ready.set()
        self.wake_all()  # anything published while we were not listening

    async def _listen_postgres(self) -> None:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(**postgres_connect_kwargs(), autocommit=True)
        try:
            await conn.execute(f'LISTEN "{channel_name()}"')
            self._subscribed()
            async for notice in conn.notifies():
                self.dispatch(notice.payload)
        finally:
            await conn.close()

    async def _listen_redis(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.REDIS_URL)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel_name())
            self._subscribed()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self.dispatch(message["data"])
        finally:
            await pubsub.aclose()
            await client.aclose()

    async def _poll(self) -> None:
        from asgiref.sync import sync_to_async

        self._subscribed()
        while True:
            await asyncio.sleep(POLL_INTERVAL_SECONDS)
            ids = list(self.waiters)
            if ids:
                for step_id in await sync_to_async(decided_among, thread_sensitive=False)(ids):
                    self.dispatch(f"{DECIDED}:{step_id}")


def postgres_connect_kwargs() -> dict[str, Any]:
    """psycopg connection arguments of the default database (the test database in tests)."""
    params = connection.get_connection_params()
    kwargs = {key: params[key] for key in ("dbname", "user", "password", "host", "port") if params.get(key)}
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "options", "service"):
        if key in params:
            kwargs[key] = params[key]
    return kwargs


def decided_among(step_ids: list[int]) -> list[int]:
    from django.db import close_old_connections

    from reviewqueue.core.models import Step, StepStatus

    close_old_connections()
    return list(
        Step.objects.filter(pk__in=step_ids).exclude(status=StepStatus.PENDING_REVIEW).values_list("pk", flat=True)
    )


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(loop)
    return hub
