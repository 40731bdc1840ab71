"""Reads for the reviewer's screens, each shaped for one screen in a fixed number of queries."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from reviewqueue.core.models import Attachment, Step
from reviewqueue.review.models import ItemStatus, Queue, Review, ReviewItem
from reviewqueue.review.selectors import queues_for_user
from reviewqueue.web import rendering
from reviewqueue.web.computer_use import ScreenAction, screen_action

# Earlier steps of the trace shown as context: the most recent ones; the last few open, the rest folded.
CONTEXT_LIMIT = 100
CONTEXT_OPEN = 3
SUMMARY_CHARS = 160


def start_of_today() -> datetime:
    return timezone.localtime(timezone.now()).replace(hour=0, minute=0, second=0, microsecond=0)


# --- home ---------------------------------------------------------------------------------------


def home_queues(user: Any) -> list[Queue]:
    """The user's queues with their counts (queues_for_user) and `waiting_count`: pending items
    whose agent is blocked waiting for the decision. Two queries."""
    queues = list(queues_for_user(user))
    waiting = dict(
        ReviewItem.objects.filter(queue__in=[q.pk for q in queues], status=ItemStatus.PENDING, step__blocking=True)
        .order_by()
        .values_list("queue")
        .annotate(n=Count("*"))
    )
    for queue in queues:
        queue.waiting_count = waiting.get(queue.pk, 0)  # type: ignore[attr-defined]
    return queues


# --- the item view ------------------------------------------------------------------------------


@dataclass
class ContextStep:
    id: int
    kind: str
    name: str
    status: str
    summary: str
    detail: str


def _summary(output: Any) -> tuple[str, str]:
    """A one-line summary of an output and its full text (for a folded context step)."""
    if rendering.is_text_output(output):
        text = output if isinstance(output, str) else output["content"]
        line = " ".join(text.split())
        return (line[:SUMMARY_CHARS] + "…" if len(line) > SUMMARY_CHARS else line), text
    message = rendering.output_message(output)
    if message.tool_calls:
        calls = ", ".join(f"{call.name}({' '.join(call.arguments.split())})" for call in message.tool_calls)
        line = calls[:SUMMARY_CHARS] + ("…" if len(calls) > SUMMARY_CHARS else "")
    else:
        flat = " ".join(rendering.pretty_json(output).split())
        line = flat[:SUMMARY_CHARS] + ("…" if len(flat) > SUMMARY_CHARS else "")
    return line, rendering.pretty_json(rendering.decode_arguments(output))


@dataclass
class StepView:
    """Everything the item view shows about a step, prepared once."""

    step: Step
    messages: list[rendering.Message]
    tools: list[dict[str, Any]]
    output: rendering.Message
    editor_mode: str
    editor_text: str
    attachments: list[Attachment]
    action: ScreenAction | None
    screenshot: Attachment | None
    context_open: list[ContextStep] = field(default_factory=list)
    context_folded: list[ContextStep] = field(default_factory=list)
    metadata: str = ""

    @property
    def matched(self) -> str:
        """What made the routing rule match, e.g. "confidence = 0.42, kind = llm"."""
        matched = (self.step.route_reason or {}).get("matched") if isinstance(self.step.route_reason, dict) else None
        if not isinstance(matched, dict):
            return ""
        return ", ".join(f"{field} = {value}" for field, value in matched.items())

    @property
    def context_count(self) -> int:
        return len(self.context_open) + len(self.context_folded)


def step_view(step: Step, *, with_context: bool = True) -> StepView:
    """The step's rendered parts, its images and (one query) the earlier steps of its trace.
    Never a query per context step: summaries are built from one list of rows."""
    # `load_step` annotates `has_attachments`, so the common step without images costs no query here.
    has_attachments = getattr(step, "has_attachments", True)
    attachments = list(step.attachments.all().order_by("id")) if has_attachments else []
    mode, text = rendering.editable_output(step.output)
    action = screen_action(step.output)
    view = StepView(
        step=step,
        messages=rendering.conversation(step.input),
        tools=rendering.tool_definitions(step.input),
        output=rendering.output_message(step.output),
        editor_mode=mode,
        editor_text=text,
        attachments=attachments,
        action=action,
        screenshot=attachments[-1] if attachments and action and action.has_point else None,
        metadata=rendering.pretty_json(step.metadata) if step.metadata else "",
    )
    if with_context and step.trace_id is not None:
        rows = list(
            Step.objects.filter(trace_id=step.trace_id, id__lt=step.pk)
            .order_by("-id")
            .only("id", "kind", "name", "status", "output")[:CONTEXT_LIMIT]
        )
        rows.reverse()
        context = []
        for row in rows:
            summary, detail = _summary(row.output)
            context.append(ContextStep(row.pk, row.kind, row.name, row.status, summary, detail))
        view.context_open = context[-CONTEXT_OPEN:]
        view.context_folded = context[:-CONTEXT_OPEN] if len(context) > CONTEXT_OPEN else []
    return view


def load_step(step_id: int) -> Step:
    """The step with what the item view shows of it, and whether it has images, in one query."""
    return (
        Step.objects.select_related("agent")
        .annotate(has_attachments=Exists(Attachment.objects.filter(step=OuterRef("pk"))))
        .get(pk=step_id)
    )


@dataclass
class Progress:
    done_today: int
    remaining: int  # pending items, counted up to REMAINING_CAP
    median_seconds: float | None

    @property
    def remaining_capped(self) -> bool:
        return self.remaining >= REMAINING_CAP


MEDIAN_OVER = 50  # the reviewer's last N reviews in the queue
# The strip says "1,000+" beyond this: counting every pending row of a deep queue on each verdict
# would cost more than the rest of the page (an index scan of 100,000 entries is ~15 ms).
REMAINING_CAP = 1000


def progress(user: Any, queue: Queue) -> Progress:
    """Done today (this user, this queue), pending items left in the queue (up to REMAINING_CAP),
    and the user's median seconds per item over their last MEDIAN_OVER reviews there.

    One query: each part scans a small index range (the capped pending range of `item_claim_order`,
    this user's reviews of today, their last reviews)."""
    item_table, review_table = ReviewItem._meta.db_table, Review._meta.db_table  # names, not input
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT 0, (SELECT COUNT(*) FROM (SELECT 1 FROM {item_table}
                                WHERE queue_id = %s AND status = %s LIMIT %s) pending),
                          (SELECT COUNT(*) FROM {review_table} r JOIN {item_table} i ON i.id = r.item_id
                                WHERE r.reviewer_id = %s AND i.queue_id = %s AND r.created_at >= %s)
                UNION ALL
                SELECT 1, seconds, NULL FROM (
                    SELECT r.seconds_spent AS seconds FROM {review_table} r JOIN {item_table} i ON i.id = r.item_id
                    WHERE r.reviewer_id = %s AND i.queue_id = %s AND r.seconds_spent IS NOT NULL
                    ORDER BY r.created_at DESC LIMIT %s) recent""",
            [
                *(queue.pk, ItemStatus.PENDING.value, REMAINING_CAP, user.pk, queue.pk, start_of_today()),
                *(user.pk, queue.pk, MEDIAN_OVER),
            ],
        )
        rows = cursor.fetchall()
    remaining, done_today = next((int(a), int(b)) for kind, a, b in rows if kind == 0)
    seconds = [float(a) for kind, a, _ in rows if kind == 1]
    return Progress(done_today, remaining, statistics.median(seconds) if seconds else None)


# --- history ------------------------------------------------------------------------------------


def history(user: Any, *, search: str = "", verdict: str = "") -> QuerySet[Review]:
    """The user's reviews, newest first, with what the history list shows selected in one query."""
    reviews = Review.objects.filter(reviewer=user).select_related(
        "item__queue", "item__step__agent", "item__step__decision"
    )
    if verdict:
        reviews = reviews.filter(verdict=verdict)
    for word in search.split()[:5]:
        reviews = reviews.filter(
            Q(item__step__name__icontains=word)
            | Q(item__step__external_id__icontains=word)
            | Q(item__step__agent__name__icontains=word)
            | Q(item__queue__name__icontains=word)
            | Q(reason__icontains=word)
            | Q(comment__icontains=word)
            | Q(item__step__trace__external_id__icontains=word)
        )
    return reviews.order_by("-created_at", "-id")
