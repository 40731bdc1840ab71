"""The agent API for steps (DESIGN §4): ingest, list, read, and read the decision.

Agents only: `Authorization: Bearer <API key>`; reviewer tokens and sessions get 401 here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from reviewqueue.api.authentication import ApiKeyAuthentication, IsAgent, request_agent
from reviewqueue.api.decisions import step_decision_view
from reviewqueue.api.pagination import NewestFirstPagination
from reviewqueue.core import rows
from reviewqueue.core.ingest import IngestValidationError, ingest_steps
from reviewqueue.core.models import Agent, Attachment, Step, StepStatus, Trace
from reviewqueue.review.models import Queue, ReviewItem
from reviewqueue.review.selectors import step_decision


class StepsJSONParser(BaseParser):
    """Plain `json.loads`: NaN/Infinity literals parse, so that validation can name the field
    that carries them; anything unparsable answers 400 "malformed JSON: …"."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ParseError(f"malformed JSON: {exc}") from None


class AgentAPIView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsAgent]


# --- representation -----------------------------------------------------------------------------


def step_queryset() -> QuerySet[Step]:
    """Everything `step_representation` reads, in two queries for any number of steps: the steps
    (with their trace, decision and the slug of their latest item's queue) and their attachments."""
    latest_queue = ReviewItem.objects.filter(step=OuterRef("pk")).order_by("-id").values("queue__slug")[:1]
    return (
        Step.objects.select_related("trace", "decision", "decision__reviewer")
        .annotate(queue_slug=Subquery(latest_queue))
        .prefetch_related(Prefetch("attachments", queryset=Attachment.objects.order_by("id")))
    )


_STEP = rows.Columns(Step, "s")
_TRACE = rows.Columns(Trace, "t")
_ATTACHMENT = rows.Columns(Attachment, "a")


def undecided_step(step_id: int) -> tuple[Step, list[Attachment]] | None:
    """A step and its attachments as `step_representation` reads them, in one hand-written
    query (see `rows`): the step with its trace and the slug of its latest item's queue, one row
    per attachment. For a step under review: a decision, should there be one, loads on access
    (one query), as the ORM would."""
    with rows.cursor() as cursor:
        cursor.execute(_undecided_step_sql("%s"), [step_id])
        return load_undecided_step(cursor.fetchall())


def undecided_step_joined() -> rows.Joined:
    """The query of `undecided_step` for the step of an item being claimed (`rows.Joined`): the
    reviewer API's claim reads its step in the claiming statement."""
    return rows.Joined(_undecided_step_sql("written.step_id"), [])


def _undecided_step_sql(step_id: str) -> str:
    items, queues = ReviewItem._meta.db_table, Queue._meta.db_table
    latest_queue = (
        f"(SELECT lq.slug FROM {items} li JOIN {queues} lq ON lq.id = li.queue_id"
        " WHERE li.step_id = s.id ORDER BY li.id DESC LIMIT 1)"
    )
    return (
        f"SELECT {_STEP.sql}, {latest_queue}, {_TRACE.sql}, {_ATTACHMENT.sql} FROM {Step._meta.db_table} s"
        f" LEFT JOIN {Trace._meta.db_table} t ON t.id = s.trace_id"
        f" LEFT JOIN {Attachment._meta.db_table} a ON a.step_id = s.id WHERE s.id = {step_id} ORDER BY a.id"
    )


def load_undecided_step(found: Sequence[Sequence[Any]]) -> tuple[Step, list[Attachment]] | None:
    """The step and its attachments from the rows of `undecided_step`'s query (none: None)."""
    if not found or found[0][0] is None:
        return None
    (step,), (queue_slug, *joined) = rows.load_row(found[0], _STEP)
    step.queue_slug = queue_slug  # type: ignore[attr-defined]
    if step.trace_id is not None:
        step.trace = _TRACE.load(joined[: len(_TRACE.fields)])
    start = len(_STEP.fields) + 1 + len(_TRACE.fields)
    attachments = [_ATTACHMENT.load(row[start:]) for row in found if row[start] is not None]
    attachments.sort(key=lambda a: a.pk)  # joined laterally, the rows' order is not the query's
    return step, attachments


def attachment_urls(attachment: Attachment) -> tuple[str, str]:
    """Served by the reviewer UI (web app), which checks access."""
    return f"/attachments/{attachment.pk}/", f"/attachments/{attachment.pk}/thumb/"


def step_representation(
    step: Step, *, request: Any = None, attachments: Sequence[Attachment] | None = None
) -> dict[str, Any]:
    """The one JSON form of a step (the API, and webhooks). `step` should come from
    `step_queryset()` (or `undecided_step`, with its `attachments`). URLs are absolute when a
    request is given, else paths."""

    def url(path: str) -> str:
        return request.build_absolute_uri(path) if request is not None else path

    shown = []
    for a in step.attachments.all() if attachments is None else attachments:
        image_url, thumb_url = attachment_urls(a)
        shown.append(
            {
                "id": a.pk,
                "filename": a.filename,
                "content_type": a.content_type,
                "width": a.width,
                "height": a.height,
                "url": url(image_url),
                "thumbnail_url": url(thumb_url),
            }
        )
    return {
        "id": step.pk,
        "external_id": step.external_id,
        "trace_id": step.trace.external_id if step.trace_id else None,
        "parent_id": step.parent_external_id or None,
        "kind": step.kind,
        "name": step.name,
        "input": step.input,
        "output": step.output,
        "confidence": step.confidence,
        "metadata": step.metadata,
        "blocking": step.blocking,
        "status": step.status,
        "queue": step.queue_slug,
        "rule": {
            "name": step.rule_name,
            "version": step.rule_version,
            "matched": (step.route_reason or {}).get("matched", {}),
        }
        if step.rule_name
        else None,
        "spot_check": step.spot_check,
        "attachments": shown,
        "created_at": step.created_at.isoformat(),
        "decision": step_decision(step),
    }


# --- views --------------------------------------------------------------------------------------


class StepsView(AgentAPIView):
    parser_classes = [StepsJSONParser]

    @extend_schema(
        operation_id="steps_ingest",
        summary='Send one step, or {"steps": [...]} (up to 1000); idempotent on external_id',
        request=OpenApiTypes.OBJECT,
        responses={
            201: OpenApiTypes.OBJECT,
            200: OpenApiTypes.OBJECT,
            400: OpenApiTypes.OBJECT,
            413: OpenApiTypes.OBJECT,
        },
    )
    def post(self, request: Request) -> Response:
        agent = request_agent(request)
        body = request.data
        batch = isinstance(body, dict) and "steps" in body
        if batch:
            unknown = sorted(set(body) - {"steps"})
            if unknown:
                raise ValidationError({key: ['unknown field; send a step, or {"steps": [...]}'] for key in unknown})
            payloads = body["steps"]
            if not isinstance(payloads, list):
                raise ValidationError({"steps": ["must be a list of step objects"]})
            if not payloads:
                raise ValidationError({"steps": ["must not be empty"]})
            if len(payloads) > settings.MAX_BATCH_STEPS:
                raise ValidationError(
                    {"steps": [f"at most {settings.MAX_BATCH_STEPS} steps per request (got {len(payloads)})"]}
                )
        elif isinstance(body, dict):
            payloads = [body]
        else:
            raise ValidationError({"non_field_errors": ['the body must be a step object or {"steps": [...]}']})

        try:
            answers, created = ingest_steps(agent=agent, payloads=payloads)
        except IngestValidationError as exc:
            if batch:
                data = {"detail": exc.batch_detail(), "errors": exc.batch_errors()}
            else:
                data = {"detail": exc.single_detail(), "errors": exc.entry_errors[0]}
            return Response(data, status=status.HTTP_400_BAD_REQUEST)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response({"steps": answers} if batch else answers[0], status=code)

    @extend_schema(
        operation_id="steps_list",
        summary="The agent's own steps, newest first (cursor pagination)",
        parameters=[
            OpenApiParameter("trace_id", str),
            OpenApiParameter("status", str, enum=StepStatus.values),
            OpenApiParameter("page_size", int, description="1..500, default 100"),
            OpenApiParameter("cursor", str),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        agent = request_agent(request)
        steps = step_queryset().filter(agent=agent)
        trace_id = request.query_params.get("trace_id")
        if trace_id is not None:
            steps = steps.filter(trace__external_id=trace_id)
        step_status = request.query_params.get("status")
        if step_status is not None:
            if step_status not in StepStatus.values:
                raise ValidationError({"status": [f"must be one of {', '.join(StepStatus.values)}"]})
            steps = steps.filter(status=step_status)
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(steps, request, view=self)
        return paginator.get_paginated_response([step_representation(s, request=request) for s in page])


def _agent_step(agent: Agent, step_id: int) -> Step:
    """The agent's own step, or 404 (another agent's step is indistinguishable from none)."""
    return get_object_or_404(step_queryset(), pk=step_id, agent=agent)


class StepDetailView(AgentAPIView):
    @extend_schema(operation_id="steps_retrieve", responses={200: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT})
    def get(self, request: Request, step_id: int) -> Response:
        step = _agent_step(request_agent(request), step_id)
        return Response(step_representation(step, request=request))


urlpatterns = [
    path("steps", StepsView.as_view(), name="steps"),
    path("steps/<int:step_id>", StepDetailView.as_view(), name="step-detail"),
    path("steps/<int:step_id>/decision", step_decision_view, name="step-decision"),
]
