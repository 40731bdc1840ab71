"""Admin API for webhooks (DESIGN §4): /api/v1/webhooks (CRUD, staff only), plus
POST /api/v1/webhooks/{id}/test (send a test event) and GET /api/v1/webhooks/{id}/deliveries."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from reviewqueue.hooks.models import Webhook, WebhookDelivery
from reviewqueue.hooks.services import WebhookError, delete_webhook, save_webhook, send_test_event, webhook_state


def webhook_json(webhook: Webhook, *, with_secret: bool = False) -> dict[str, Any]:
    """The secret is shown only in the answer that set it (create, or an update that changed it)."""
    data = {"id": webhook.pk, **webhook_state(webhook), "created_at": webhook.created_at.isoformat()}
    data["secret"] = webhook.secret if with_secret else None
    return data


def delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.pk,
        "event_id": str(delivery.event_id),
        "type": delivery.event_type,
        "step_id": delivery.step_id,
        "status": delivery.status,
        "attempts": [
            {
                "number": a.number,
                "started_at": a.started_at.isoformat(),
                "status_code": a.status_code,
                "error": a.error,
                "response_ms": a.response_ms,
            }
            for a in delivery.attempt_log.all()
        ],
        "next_attempt_at": delivery.next_attempt_at.isoformat() if delivery.status == "pending" else None,
        "created_at": delivery.created_at.isoformat(),
        "delivered_at": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
    }


def _error(exc: WebhookError) -> Response:
    return Response({"detail": str(exc), "errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST)


def _webhook(webhook_id: int) -> Webhook:
    return get_object_or_404(Webhook.objects.select_related("agent"), pk=webhook_id)


class WebhooksView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="webhooks_list", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        hooks = Webhook.objects.select_related("agent").order_by("id")
        agent = request.query_params.get("agent")
        if agent:
            hooks = hooks.filter(agent__name=agent)
        return Response({"results": [webhook_json(h) for h in hooks]})

    @extend_schema(
        operation_id="webhooks_create",
        summary='{"agent", "url", "secret"?, "events"?, "enabled"?}; a secret is generated when none is given',
        request=OpenApiTypes.OBJECT,
        responses={201: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        try:
            webhook = save_webhook(data=request.data, actor=request.user)
        except WebhookError as exc:
            return _error(exc)
        return Response(webhook_json(webhook, with_secret=True), status=status.HTTP_201_CREATED)


class WebhookDetailView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="webhooks_retrieve", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, webhook_id: int) -> Response:
        return Response(webhook_json(_webhook(webhook_id)))

    @extend_schema(operation_id="webhooks_update", request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def patch(self, request: Request, webhook_id: int) -> Response:
        webhook = _webhook(webhook_id)
        try:
            webhook = save_webhook(data=request.data, actor=request.user, webhook=webhook)
        except WebhookError as exc:
            return _error(exc)
        changed_secret = isinstance(request.data, dict) and "secret" in request.data
        return Response(webhook_json(webhook, with_secret=changed_secret))

    @extend_schema(
        operation_id="webhooks_put",
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
        summary="The same as PATCH: fields left out keep their values",
    )
    def put(self, request: Request, webhook_id: int) -> Response:
        return self.patch(request, webhook_id)

    @extend_schema(operation_id="webhooks_destroy", responses={204: None})
    def delete(self, request: Request, webhook_id: int) -> Response:
        delete_webhook(webhook=_webhook(webhook_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookTestView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="webhooks_test", request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request, webhook_id: int) -> Response:
        delivery = send_test_event(webhook=_webhook(webhook_id))
        return Response({"delivery": delivery.pk, "event_id": str(delivery.event_id)}, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveriesView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="webhooks_deliveries", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, webhook_id: int) -> Response:
        webhook = _webhook(webhook_id)
        deliveries = webhook.deliveries.prefetch_related("attempt_log").order_by("-id")[:100]
        return Response({"results": [delivery_json(d) for d in deliveries]})


urlpatterns = [
    path("webhooks", WebhooksView.as_view(), name="webhooks"),
    path("webhooks/<int:webhook_id>", WebhookDetailView.as_view(), name="webhook-detail"),
    path("webhooks/<int:webhook_id>/test", WebhookTestView.as_view(), name="webhook-test"),
    path("webhooks/<int:webhook_id>/deliveries", WebhookDeliveriesView.as_view(), name="webhook-deliveries"),
]
