"""django-q2 tasks for webhook deliveries."""

from __future__ import annotations

import time

from django.conf import settings
from django.db.models import Min
from django.utils import timezone

from reviewqueue.hooks.models import DeliveryStatus, WebhookDelivery
from reviewqueue.hooks.services import deliver_due

SCHEDULE_NAME = "reviewqueue.webhooks"


def deliver_webhook(webhook_id: int) -> dict[str, int]:
    """Deliver the webhook's due deliveries. A delivery whose first attempt just failed is
    retried once more here after WEBHOOK_FIRST_RETRY_SECONDS (about 10 s: the scheduler only
    looks every 30–60 s); later retries are picked up by the minutely `deliver_due_webhooks`."""
    counts = deliver_due(webhook_id=webhook_id)
    wait = settings.WEBHOOK_FIRST_RETRY_SECONDS
    if counts["retrying"]:
        first_retry = WebhookDelivery.objects.filter(
            webhook_id=webhook_id, status=DeliveryStatus.PENDING, attempts=1
        ).aggregate(at=Min("next_attempt_at"))["at"]
        if first_retry is not None:
            delay = (first_retry - timezone.now()).total_seconds()
            if delay <= wait + 1:
                time.sleep(max(0.0, delay))
                again = deliver_due(webhook_id=webhook_id)
                counts = {key: counts[key] + again[key] for key in counts}
    return counts


def deliver_due_webhooks() -> dict[str, int]:
    """The minutely schedule: every due delivery of every webhook (retries, and anything a
    worker restart left behind)."""
    return deliver_due()
