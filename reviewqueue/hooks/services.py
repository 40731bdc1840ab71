"""Webhooks: configuration, events, signed deliveries with retries (DESIGN §4).

- An event (`step.decided`, `item.escalated`) becomes one WebhookDelivery per enabled webhook
  of the step's agent that subscribed to it, with a stable event id and a fixed JSON body.
- A delivery is POSTed with `X-Reviewqueue-Event`, `X-Reviewqueue-Timestamp` and
  `X-Reviewqueue-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body>`.
- 2xx: delivered. Network errors, 5xx and 429: retried with backoff (RETRY_DELAYS: 7 attempts
  over about 80 minutes). Any other answer (4xx, or a 3xx: redirects are not followed): failed.
- Deliveries of one step to one webhook go out in order: one waits while an earlier one of the
  same step is still pending.
- Every attempt is logged (WebhookAttempt) with its status code or error and response time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpcore
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from reviewqueue.core import audit, rows
from reviewqueue.core.models import Agent, Step
from reviewqueue.hooks.models import (
    TEST_EVENT,
    DeliveryStatus,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    new_secret,
)
from reviewqueue.hooks.net import GuardedBackend, UnsafeTarget, check_url

# Seconds to wait after attempt n (1-based) failed (the first one is WEBHOOK_FIRST_RETRY_SECONDS):
# attempt 2 at +10 s, 3 at ~1 min, 4 at ~6 min, 5 at ~21 min, 6 at ~51 min, 7 at ~81 min;
# then the delivery is marked failed.
RETRY_DELAYS = (10, 60, 300, 900, 1800, 1800)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
LOCK_SECONDS = 120
USER_AGENT = "reviewqueue-webhooks/1"


class WebhookError(Exception):
    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        self.errors = dict(errors)
        field, messages = next(iter(self.errors.items()))
        super().__init__(f"{field}: {messages[0]}")


# --- signing --------------------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>." + body>`, keyed with the webhook secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, timestamp: str, body: bytes, header: str, *, tolerance: int = 300) -> bool:
    """What a receiver does (docs/agents.md has the same few lines): constant-time compare, and
    refuse timestamps older than `tolerance` seconds (replays)."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(signature(secret, timestamp, body), header)


# --- configuration --------------------------------------------------------------------------------

WEBHOOK_FIELDS = ("agent", "url", "secret", "events", "enabled")


def webhook_state(webhook: Webhook) -> dict[str, Any]:
    """The webhook in the API's field names, secret left out (also the audit before/after)."""
    return {
        "agent": webhook.agent.name,
        "url": webhook.url,
        "events": list(webhook.events),
        "enabled": webhook.enabled,
    }


def _clean(data: Any, webhook: Webhook | None) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise WebhookError({"non_field_errors": ["expected an object"]})
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for key in data:
        if key not in WEBHOOK_FIELDS:
            errors[str(key)] = [f"unknown field; expected: {', '.join(WEBHOOK_FIELDS)}"]
    if webhook is None:
        for key in ("agent", "url"):
            if key not in data:
                errors[key] = ["required"]
    if "agent" in data:
        agent = Agent.objects.filter(name=data["agent"]).first() if isinstance(data["agent"], str) else None
        if agent is None:
            errors["agent"] = [f"no agent named {data['agent']!r}"]
        else:
            values["agent"] = agent
    if "url" in data:
        url = data["url"]
        if not isinstance(url, str) or not url.strip() or len(url) > 2000:
            errors["url"] = ["must be an http(s) URL of at most 2000 characters"]
        else:
            try:
                values["url"] = check_url(url.strip())
            except UnsafeTarget as exc:
                errors["url"] = [str(exc)]
    if "secret" in data:
        secret = data["secret"]
        if secret is None or secret == "":
            values["secret"] = new_secret()
        elif not isinstance(secret, str) or not 16 <= len(secret) <= 200:
            errors["secret"] = ["must be a string of 16 to 200 characters (or empty to generate one)"]
        else:
            values["secret"] = secret
    if "events" in data:
        events = data["events"]
        if (
            not isinstance(events, list)
            or not events
            or not all(isinstance(e, str) and e in WebhookEvent.values for e in events)
        ):
            errors["events"] = [f"must be a non-empty list of: {', '.join(WebhookEvent.values)}"]
        else:
            values["events"] = sorted(set(events))
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            errors["enabled"] = ["must be true or false"]
        else:
            values["enabled"] = data["enabled"]
    if errors:
        raise WebhookError(errors)
    return values


def save_webhook(*, data: Any, actor: Any, webhook: Webhook | None = None) -> Webhook:
    """Create a webhook (`webhook=None`) or update the given fields; the URL is checked (SSRF)."""
    values = _clean(data, webhook)
    before = webhook_state(webhook) if webhook is not None else None
    with transaction.atomic():
        target = webhook or Webhook()
        for key, value in values.items():
            setattr(target, key, value)
        target.updated_at = timezone.now()
        target.save()
        audit.record(
            "webhook.created" if before is None else "webhook.updated",
            target,
            actor=actor,
            before=before,
            after=webhook_state(target) | ({"secret": "changed"} if "secret" in values and before else {}),
        )
    return target


def delete_webhook(*, webhook: Webhook, actor: Any) -> None:
    with transaction.atomic():
        before = webhook_state(webhook)
        pk = webhook.pk
        webhook.delete()
        audit.record("webhook.deleted", object_type="webhook", object_id=pk, actor=actor, before=before)


# --- events ---------------------------------------------------------------------------------------


def _event_body(event_id: uuid.UUID, event_type: str, data: dict[str, Any], now: datetime) -> str:
    return json.dumps(
        {"id": str(event_id), "type": event_type, "created_at": now.isoformat(), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _step_data(step_id: int) -> dict[str, Any] | None:
    from reviewqueue.api.steps import step_queryset, step_representation

    step = step_queryset().filter(pk=step_id).first()
    if step is None:
        return None
    representation = step_representation(step)
    return {"step": representation, "decision": representation["decision"]}


def enqueue_event(
    *,
    event_type: str,
    step_id: int,
    item_id: int | None = None,
    escalated_to_id: int | None = None,
    webhooks: list[Webhook] | None = None,
) -> list[WebhookDelivery]:
    """Record the event for every enabled webhook of the step's agent subscribed to it, and
    start delivering after commit. Cheap when the agent has no webhooks (one query, none when
    the caller read them already: `webhooks`, as `step_webhooks` gives them)."""
    hooks = [h for h in (step_webhooks(step_id) if webhooks is None else webhooks) if event_type in h.events]
    if not hooks:
        return []
    data = _step_data(step_id)
    if data is None:
        return []
    if event_type == WebhookEvent.ITEM_ESCALATED:
        from reviewqueue.review.models import ReviewItem

        queues = dict(
            ReviewItem.objects.filter(pk__in=[i for i in (item_id, escalated_to_id) if i]).values_list(
                "pk", "queue__slug"
            )
        )
        data["item"] = {
            "id": item_id,
            "queue": queues.get(item_id),
            "escalated_to": {"id": escalated_to_id, "queue": queues.get(escalated_to_id)} if escalated_to_id else None,
        }
    return _create_deliveries(hooks, event_type, data, step_id)


_WEBHOOK = rows.Columns(Webhook, "w")


def step_webhooks(step_id: int) -> list[Webhook]:
    """The enabled webhooks of the step's agent, in their order (`Meta.ordering`: agent name,
    then id; one agent here): one hand-written query, as every decision asks (see `rows`)."""
    found: list[Webhook] = []
    rows.run(step_webhooks_statement(step_id, found.extend))
    return found


def step_webhooks_statement(step_id: int, then: Callable[[list[Webhook]], None]) -> rows.Statement:
    """The query of `step_webhooks` as a `rows.Statement` (to go with others in one round trip)
    that calls `then` with the webhooks."""
    sql = (
        f"SELECT {_WEBHOOK.sql} FROM {Webhook._meta.db_table} w"
        f" JOIN {Step._meta.db_table} s ON s.agent_id = w.agent_id WHERE s.id = %s AND w.enabled ORDER BY w.id"
    )
    return rows.Statement(sql, [step_id], lambda found: then([_WEBHOOK.load(row) for row in found]))


def send_test_event(*, webhook: Webhook) -> WebhookDelivery:
    """The "send test event" action: a `webhook.test` event through the same delivery path."""
    data = {"webhook": {"id": webhook.pk, "agent": webhook.agent.name, "url": webhook.url}, "test": True}
    return _create_deliveries([webhook], TEST_EVENT, data, None)[0]


def _create_deliveries(
    hooks: list[Webhook], event_type: str, data: dict[str, Any], step_id: int | None
) -> list[WebhookDelivery]:
    now = timezone.now()
    event_id = uuid.uuid4()  # one event, the same id for every webhook and every retry
    body = _event_body(event_id, event_type, data, now)
    with transaction.atomic():
        deliveries = WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(
                    webhook=hook,
                    event_id=event_id,
                    event_type=event_type,
                    step_id=step_id,
                    body=body,
                    next_attempt_at=now,
                    created_at=now,
                )
                for hook in hooks
            ]
        )
        for hook in hooks:
            transaction.on_commit(lambda pk=hook.pk: start_delivery(pk))
    return deliveries


def start_delivery(webhook_id: int) -> None:
    """Hand the webhook's due deliveries to a django-q2 worker."""
    from django_q.tasks import async_task

    async_task("reviewqueue.hooks.tasks.deliver_webhook", webhook_id, task_name=f"webhook-{webhook_id}")


# --- delivering -----------------------------------------------------------------------------------


def due_deliveries(*, webhook_id: int | None = None, now: datetime | None = None) -> list[int]:
    """Ids of pending deliveries whose time has come and that no earlier pending delivery of the
    same step (to the same webhook) holds back, oldest first."""
    now = now or timezone.now()
    earlier = WebhookDelivery.objects.filter(
        webhook_id=OuterRef("webhook_id"),
        step_id=OuterRef("step_id"),
        id__lt=OuterRef("id"),
        status=DeliveryStatus.PENDING,
    )
    qs = (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
        .filter(Q(step_id__isnull=True) | ~Exists(earlier))
        .order_by("id")
    )
    if webhook_id is not None:
        qs = qs.filter(webhook_id=webhook_id)
    return list(qs.values_list("id", flat=True)[:500])


def deliver_due(*, webhook_id: int | None = None) -> dict[str, int]:
    """Attempt every due delivery (of one webhook, or all); returns counts by outcome. Safe to
    run in several workers at once: each delivery is taken with a conditional UPDATE."""
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    while True:
        ids = due_deliveries(webhook_id=webhook_id)
        progressed = False
        for delivery_id in ids:
            outcome = attempt_delivery(delivery_id)
            if outcome is not None:
                counts[outcome] += 1
                progressed = progressed or outcome != "retrying"
        # A delivered or failed delivery may release the next one of its step: go round again.
        if not ids or not progressed:
            return counts


def _take(delivery_id: int, now: datetime) -> WebhookDelivery | None:
    taken = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
        .update(locked_until=now + timedelta(seconds=LOCK_SECONDS))
    )
    if not taken:
        return None
    return WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)


def attempt_delivery(delivery_id: int) -> str | None:
    """One attempt; "delivered", "retrying" or "failed", or None when another worker has it."""
    now = timezone.now()
    delivery = _take(delivery_id, now)
    if delivery is None:
        return None
    webhook = delivery.webhook
    number = delivery.attempts + 1
    status_code, error, elapsed_ms, response_body = post(webhook, delivery)
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=number,
        started_at=now,
        status_code=status_code,
        error=error,
        response_ms=elapsed_ms,
        response_body=response_body,
    )
    delivery.attempts = number
    delivery.last_status_code = status_code
    delivery.last_error = error
    delivery.locked_until = None
    if status_code is not None and 200 <= status_code < 300:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = timezone.now()
        outcome = "delivered"
    elif retryable(status_code) and number < MAX_ATTEMPTS:
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=retry_delay(number))
        outcome = "retrying"
    else:
        delivery.status = DeliveryStatus.FAILED
        outcome = "failed"
    delivery.save(
        update_fields=[
            "attempts",
            "last_status_code",
            "last_error",
            "locked_until",
            "status",
            "delivered_at",
            "next_attempt_at",
        ]
    )
    return outcome


def retry_delay(failed_attempt: int) -> int:
    """Seconds before the next attempt after attempt `failed_attempt` (1-based) failed."""
    if failed_attempt == 1:
        return int(settings.WEBHOOK_FIRST_RETRY_SECONDS)
    return RETRY_DELAYS[failed_attempt - 1]


def retryable(status_code: int | None) -> bool:
    """Network errors (no status), 5xx and 429; never another 4xx, never a redirect."""
    return status_code is None or status_code >= 500 or status_code == 429


def post(webhook: Webhook, delivery: WebhookDelivery) -> tuple[int | None, str, float, str]:
    """POST the delivery's body, signed. Returns (status code or None, error, ms, response start)."""
    body = delivery.body.encode()
    timestamp = str(int(time.time()))
    headers = [
        (b"Content-Type", b"application/json"),
        (b"User-Agent", USER_AGENT.encode()),
        (b"X-Reviewqueue-Event", delivery.event_type.encode()),
        (b"X-Reviewqueue-Delivery", str(delivery.event_id).encode()),
        (b"X-Reviewqueue-Timestamp", timestamp.encode()),
        (b"X-Reviewqueue-Signature", signature(webhook.secret, timestamp, body).encode()),
    ]
    timeout = float(settings.WEBHOOK_TIMEOUT_SECONDS)
    extensions = {"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}}
    start = time.perf_counter()
    try:
        with (
            httpcore.ConnectionPool(network_backend=GuardedBackend(), retries=0) as pool,
            pool.stream("POST", webhook.url, headers=headers, content=body, extensions=extensions) as response,
        ):
            received = b""
            for chunk in response.iter_stream():
                received += chunk
                if len(received) >= 1000:
                    break
            status = response.status
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:1000], (time.perf_counter() - start) * 1000, ""
    except httpcore.UnsupportedProtocol as exc:
        return None, f"unsupported URL: {exc}"[:1000], (time.perf_counter() - start) * 1000, ""
    elapsed_ms = (time.perf_counter() - start) * 1000
    error = ""
    if 300 <= status < 400:
        error = "redirects are not followed; point the webhook at the final URL"
    return status, error, elapsed_ms, received[:1000].decode("utf-8", "replace")
