"""Admin: webhooks (with a "send test event" action) and the delivery log with every attempt."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from reviewqueue.hooks.models import Webhook, WebhookAttempt, WebhookDelivery
from reviewqueue.hooks.net import UnsafeTarget, check_url
from reviewqueue.hooks.services import send_test_event


class WebhookAdminForm(admin.ModelAdmin.form):  # type: ignore[name-defined]
    def clean_url(self) -> str:
        from django.core.exceptions import ValidationError

        url = self.cleaned_data["url"]
        try:
            return check_url(url)
        except UnsafeTarget as exc:
            raise ValidationError(str(exc)) from None


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    form = WebhookAdminForm
    # Django 6 makes https the default scheme for a URL typed without one; say so now.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("agent", "url", "events", "enabled", "created_at")
    list_filter = ("enabled", "agent")
    search_fields = ("url", "agent__name")
    actions = ["send_test"]

    @admin.action(description="Send a test event")
    def send_test(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for webhook in queryset.select_related("agent"):
            send_test_event(webhook=webhook)
        self.message_user(
            request, f"Test event queued for {queryset.count()} webhook(s); see Webhook deliveries.", messages.SUCCESS
        )


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "status_code", "response_ms", "error", "response_body")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "webhook", "event_type", "step_id", "status", "attempts", "last_status_code", "created_at")
    list_filter = ("status", "event_type", "webhook")
    search_fields = ("event_id", "step_id")
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    inlines = [WebhookAttemptInline]
    actions = ["retry_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Retry now")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        from django.utils import timezone

        from reviewqueue.hooks.services import start_delivery

        webhooks = set(queryset.values_list("webhook_id", flat=True))
        queryset.update(status="pending", next_attempt_at=timezone.now(), locked_until=None)
        for webhook_id in webhooks:
            start_delivery(webhook_id)
        self.message_user(request, "Queued for delivery.", messages.SUCCESS)
