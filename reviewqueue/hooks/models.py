"""Webhooks of an agent, and the log of every delivery and every attempt."""

from __future__ import annotations

import secrets
import uuid

from django.db import models
from django.utils import timezone


class WebhookEvent(models.TextChoices):
    STEP_DECIDED = "step.decided"
    ITEM_ESCALATED = "item.escalated"


# Sent by the "send test event" action only; a receiver can tell it apart by its type.
TEST_EVENT = "webhook.test"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def default_events() -> list[str]:
    return sorted(WebhookEvent.values)


class Webhook(models.Model):
    agent = models.ForeignKey("core.Agent", on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000, help_text="http(s) URL; private addresses are refused (SSRF).")
    secret = models.CharField(max_length=200, default=new_secret, help_text="Key of the HMAC-SHA256 signature.")
    events = models.JSONField(default=default_events, help_text='A list of "step.decided", "item.escalated".')
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["agent__name", "id"]

    def __str__(self) -> str:
        return f"{self.agent} → {self.url}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # not yet sent, or waiting for its next retry
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up: a 4xx answer, or out of attempts


class WebhookDelivery(models.Model):
    """One event for one webhook. `body` is the exact JSON sent on every attempt, so the event id
    and the signed bytes are the same on every retry (only the timestamp changes)."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(default=uuid.uuid4)
    event_type = models.CharField(max_length=40)
    step_id = models.BigIntegerField(null=True, blank=True, help_text="Deliveries of one step go out in order.")
    body = models.TextField()
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["webhook", "event_id"], name="delivery_one_per_event_per_webhook")
        ]
        indexes = [
            models.Index(fields=["next_attempt_at", "id"], name="delivery_due", condition=models.Q(status="pending")),
            models.Index(fields=["webhook", "step_id", "id"], name="delivery_step_order"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} → webhook {self.webhook_id}"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    response_ms = models.FloatField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="The first 1,000 characters.")

    class Meta:
        ordering = ["delivery_id", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.status_code or self.error}"
