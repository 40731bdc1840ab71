"""Queues: reviewers list theirs and claim the next item; staff create, change and delete them.

Non-members get 404 for a queue (its name does not leak); non-staff get 403 for admin calls.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from reviewqueue.api.items import error_response, item_json
from reviewqueue.api.steps import undecided_step_joined
from reviewqueue.review import permissions, services
from reviewqueue.review.models import Queue
from reviewqueue.review.queues import delete_queue, queue_fields, save_queue
from reviewqueue.review.selectors import queues_for_user
from reviewqueue.review.services import ReviewError

COUNTS = ("pending_count", "claimed_count", "overdue_count", "done_today")


def queue_json(queue: Queue, *, staff: bool) -> dict[str, Any]:
    """A queue in the API's field names; members and groups for staff only. Counts when annotated
    (`queues_for_user`). Members/groups should be prefetched when listing."""
    data = queue_fields(queue)
    if staff:  # from the prefetched members and groups (queue_state would query them)
        data["members"] = sorted(u.get_username() for u in queue.members.all())
        data["groups"] = sorted(g.name for g in queue.groups.all())
    for key in COUNTS:
        if hasattr(queue, key):
            data[key] = getattr(queue, key)
    return data


def _with_relations(qs: Any) -> Any:
    return qs.select_related("escalation_queue").prefetch_related(Prefetch("members"), Prefetch("groups"))


class QueueListView(APIView):
    @extend_schema(
        operation_id="queues_list", responses=OpenApiTypes.OBJECT, summary="Your queues with counts (staff: all)"
    )
    def get(self, request: Request) -> Response:
        staff = request.user.is_staff
        queues = queues_for_user(request.user, include_all=staff)
        queues = _with_relations(queues) if staff else queues.select_related("escalation_queue")
        return Response([queue_json(q, staff=staff) for q in queues])

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT}, summary="Staff: create a queue")
    def post(self, request: Request) -> Response:
        permissions.require_staff(request.user)
        try:
            queue = save_queue(data=request.data, actor=request.user)
        except ReviewError as exc:
            return error_response(exc)
        return Response(queue_json(queue, staff=True), status=status.HTTP_201_CREATED)


class QueueDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT, summary="A queue (members and staff)")
    def get(self, request: Request, slug: str) -> Response:
        queue = permissions.queue_for_viewer(request.user, slug)
        return Response(queue_json(queue, staff=request.user.is_staff))

    @extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT, summary="Staff: change a queue")
    def patch(self, request: Request, slug: str) -> Response:
        queue = permissions.queue_for_staff(request.user, slug)
        try:
            queue = save_queue(data=request.data, actor=request.user, queue=queue)
        except ReviewError as exc:
            return error_response(exc)
        return Response(queue_json(queue, staff=True))

    @extend_schema(responses={204: None, 409: OpenApiTypes.OBJECT}, summary="Staff: delete an empty queue")
    def delete(self, request: Request, slug: str) -> Response:
        queue = permissions.queue_for_staff(request.user, slug)
        try:
            delete_queue(queue=queue, actor=request.user)
        except ReviewError as exc:
            return error_response(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ClaimView(APIView):
    @extend_schema(
        request=None,
        responses={200: OpenApiTypes.OBJECT, 204: None},
        summary="Claim (or resume) the next item; 204 when nothing is left for you",
    )
    def post(self, request: Request, slug: str) -> Response:
        queue = permissions.queue_for_reviewer(request.user, slug)
        try:
            item = services.claim_next_item(queue=queue, user=request.user, joined=undecided_step_joined())
        except ReviewError as exc:
            return error_response(exc)
        if item is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(item_json(item, request=request))


urlpatterns = [
    path("queues", QueueListView.as_view(), name="queue-list"),
    path("queues/<slug:slug>", QueueDetailView.as_view(), name="queue-detail"),
    path("queues/<slug:slug>/claim", ClaimView.as_view(), name="queue-claim"),
]
