"""Reviewer API on items: submit a review, release, heartbeat; staff: read, assign, adjudicate.

The services validate and act (reviewqueue/review/services.py); these views find the object
through the access helpers (reviewqueue/review/permissions.py) and shape the JSON.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from reviewqueue.api.steps import load_undecided_step, step_queryset, step_representation, undecided_step
from reviewqueue.core.models import Step
from reviewqueue.review import permissions, services
from reviewqueue.review.models import OPEN_ITEM_STATUSES, Decision, Review, ReviewItem
from reviewqueue.review.services import ReviewError


def error_response(exc: ReviewError) -> Response:
    """A service refusal in the API's error shape: {"detail", "errors"?} with its status code."""
    body: dict[str, Any] = {"detail": exc.message}
    if exc.errors:
        body["errors"] = exc.errors
    return Response(body, status=exc.status_code)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def item_json(item: ReviewItem, *, request: Request | None = None, include_step: bool = True) -> dict[str, Any]:
    """An item as its reviewer sees it. Blind: never other reviewers' reviews."""
    queue = item.queue
    data: dict[str, Any] = {
        "id": item.pk,
        "queue": queue.slug,
        "status": item.status,
        "priority": item.priority,
        "agent_waiting": item.blocking,  # the agent blocks on this decision (sent "blocking": true)
        "claimed_by": item.claimed_by.get_username() if item.claimed_by_id else None,
        "lease_expires_at": _iso(item.lease_expires_at),
        "due_at": _iso(item.due_at),
        "reviews_required": queue.reviews_required,
        "reviews_count": item.reviews_count,
        "instructions": queue.instructions,
        "rubric": queue.rubric,
    }
    if include_step:
        if item.status in OPEN_ITEM_STATUSES:
            # An open item's step is undecided (but for rare races, when its decision loads
            # lazily): one query without the decision and its reviewer, on every claim.
            joined = getattr(item, "joined_rows", None)  # read by the claim (`undecided_step_joined`)
            found = load_undecided_step(joined) if joined is not None else undecided_step(item.step_id)
            if found is None:
                raise Step.DoesNotExist("Step matching query does not exist.")
            step, attachments = found
            data["step"] = step_representation(step, request=request, attachments=attachments)
        else:
            step = step_queryset().get(pk=item.step_id)
            data["step"] = step_representation(step, request=request)
    return data


def review_json(review: Review) -> dict[str, Any]:
    return {
        "id": review.pk,
        "item": review.item_id,
        "reviewer": review.reviewer.get_username(),
        "verdict": review.verdict,
        "output": review.output,
        "reason": review.reason,
        "labels": review.labels,
        "comment": review.comment,
        "seconds_spent": review.seconds_spent,
        "created_at": review.created_at.isoformat(),
    }


def decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "step": decision.step_id,
        "item": decision.item_id,
        "verdict": decision.verdict,
        "output": decision.output,
        "reason": decision.reason,
        "reviewer": decision.reviewer.get_username() if decision.reviewer_id else None,
        "method": decision.method,
        "decided_at": decision.decided_at.isoformat(),
    }


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
    return request.data


ReviewInput = inline_serializer(
    "ReviewInput",
    {
        "verdict": serializers.ChoiceField(choices=["approve", "correct", "reject", "escalate"]),
        "output": serializers.JSONField(required=False, help_text="The corrected output (required for correct)."),
        "reason": serializers.CharField(required=False, help_text="Required for reject."),
        "labels": serializers.DictField(required=False, help_text="Rubric answers by label name."),
        "comment": serializers.CharField(required=False),
        "seconds_spent": serializers.FloatField(required=False),
    },
)


class ItemDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT, summary="An item (staff, or the reviewer holding it)")
    def get(self, request: Request, item_id: int) -> Response:
        item = permissions.item_for_viewer(request.user, item_id)
        data = item_json(item, request=request)
        if request.user.is_staff:  # staff see the reviews; reviewers never see each other's
            data["assigned_to"] = item.assigned_to.get_username() if item.assigned_to_id else None
            data["reviews"] = [review_json(r) for r in item.reviews.select_related("reviewer").order_by("id")]
        return Response(data)


class ReviewCreateView(APIView):
    @extend_schema(
        request=ReviewInput,
        responses={201: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT},
        summary="Submit a verdict on the item you hold (409 when the lease is lost)",
    )
    def post(self, request: Request, item_id: int) -> Response:
        body = _body(request)
        unknown = sorted(set(body) - {"verdict", "output", "reason", "labels", "comment", "seconds_spent"})
        if unknown:
            raise serializers.ValidationError({key: ["unknown field"] for key in unknown})
        try:
            # Access (a member of the item's queue, or staff; else 404) is checked by the service
            # in the query that locks the item, as `permissions.item_for_reviewer` would.
            review = services.submit_review(
                item_id=item_id,
                user=request.user,
                verdict=body.get("verdict"),
                output=body.get("output"),
                reason=body.get("reason") if body.get("reason") is not None else "",
                labels=body.get("labels"),
                comment=body.get("comment") if body.get("comment") is not None else "",
                seconds_spent=body.get("seconds_spent"),
            )
        except ReviewError as exc:
            return error_response(exc)
        return Response(review_json(review), status=status.HTTP_201_CREATED)


class ReleaseView(APIView):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT, summary="Give a claimed item back to the queue")
    def post(self, request: Request, item_id: int) -> Response:
        item = permissions.item_for_reviewer(request.user, item_id)
        try:
            item = services.release_item(item_id=item.pk, user=request.user)
        except ReviewError as exc:
            return error_response(exc)
        return Response({"id": item.pk, "status": item.status})


class HeartbeatView(APIView):
    @extend_schema(request=None, responses=OpenApiTypes.OBJECT, summary="Extend the lease on the item you hold")
    def post(self, request: Request, item_id: int) -> Response:
        item = permissions.item_for_reviewer(request.user, item_id)
        try:
            item = services.heartbeat(item_id=item.pk, user=request.user)
        except ReviewError as exc:
            return error_response(exc)
        return Response({"id": item.pk, "status": item.status, "lease_expires_at": _iso(item.lease_expires_at)})


class AssignView(APIView):
    @extend_schema(
        request=inline_serializer("AssignInput", {"username": serializers.CharField(allow_null=True)}),
        responses=OpenApiTypes.OBJECT,
        summary="Staff: reserve an item for one reviewer (username null lifts it)",
    )
    def post(self, request: Request, item_id: int) -> Response:
        item = permissions.item_for_staff(request.user, item_id)
        body = _body(request)
        if "username" not in body:
            raise serializers.ValidationError({"username": ["required (null lifts the assignment)"]})
        username = body["username"]
        assignee = None
        if username is not None:
            if not isinstance(username, str):
                raise serializers.ValidationError({"username": ["must be a username or null"]})
            assignee = get_user_model().objects.filter(username=username).first()
            if assignee is None:
                raise serializers.ValidationError({"username": [f"no user '{username}'"]})
        try:
            item = services.assign_item(item=item, assignee=assignee, actor=request.user)
        except ReviewError as exc:
            return error_response(exc)
        return Response({"id": item.pk, "assigned_to": assignee.get_username() if assignee else None})


class AdjudicateView(APIView):
    @extend_schema(
        request=inline_serializer(
            "AdjudicateInput",
            {
                "verdict": serializers.ChoiceField(choices=["approve", "correct", "reject"]),
                "output": serializers.JSONField(required=False),
                "reason": serializers.CharField(required=False),
            },
        ),
        responses={201: OpenApiTypes.OBJECT},
        summary="Staff: decide an escalated item",
    )
    def post(self, request: Request, item_id: int) -> Response:
        item = permissions.item_for_staff(request.user, item_id)
        body = _body(request)
        try:
            decision = services.adjudicate(
                item=item,
                actor=request.user,
                verdict=body.get("verdict"),
                output=body.get("output"),
                reason=body.get("reason") if body.get("reason") is not None else "",
            )
        except ReviewError as exc:
            return error_response(exc)
        return Response(decision_json(decision), status=status.HTTP_201_CREATED)


urlpatterns = [
    path("items/<int:item_id>", ItemDetailView.as_view(), name="item-detail"),
    path("items/<int:item_id>/reviews", ReviewCreateView.as_view(), name="item-reviews"),
    path("items/<int:item_id>/release", ReleaseView.as_view(), name="item-release"),
    path("items/<int:item_id>/heartbeat", HeartbeatView.as_view(), name="item-heartbeat"),
    path("items/<int:item_id>/assign", AssignView.as_view(), name="item-assign"),
    path("items/<int:item_id>/adjudicate", AdjudicateView.as_view(), name="item-adjudicate"),
]
