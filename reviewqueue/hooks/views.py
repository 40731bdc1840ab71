"""The delivery log page (staff): /webhooks/ lists webhooks, /webhooks/<id>/ their deliveries
and every attempt, with a "send test event" button."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from reviewqueue.hooks.models import Webhook
from reviewqueue.hooks.services import send_test_event


@staff_member_required
def webhook_list(request: HttpRequest) -> HttpResponse:
    hooks = Webhook.objects.select_related("agent").order_by("agent__name", "id")
    return render(request, "hooks/webhooks.html", {"webhooks": hooks})


@staff_member_required
def delivery_log(request: HttpRequest, webhook_id: int) -> HttpResponse:
    webhook = get_object_or_404(Webhook.objects.select_related("agent"), pk=webhook_id)
    deliveries = webhook.deliveries.prefetch_related("attempt_log").order_by("-id")
    page = Paginator(deliveries, 50).get_page(request.GET.get("page"))
    return render(request, "hooks/deliveries.html", {"webhook": webhook, "page": page})


@staff_member_required
@require_POST
def send_test(request: HttpRequest, webhook_id: int) -> HttpResponse:
    webhook = get_object_or_404(Webhook.objects.select_related("agent"), pk=webhook_id)
    delivery = send_test_event(webhook=webhook)
    messages.success(request, f"Test event {delivery.event_id} queued.")
    return redirect("webhook-deliveries-page", webhook_id=webhook.pk)
