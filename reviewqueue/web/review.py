"""The review screen: `/review/<slug>/` claims (or resumes) the next item and shows it; a verdict
is an htmx POST answered with the next item. One template, `web/review.html`, whose partials
(`workbench`, `lease`, `diff`) are the fragments htmx swaps.

Domain actions go through reviewqueue.review.services only; access through its permissions.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from reviewqueue.review import permissions, services
from reviewqueue.review.models import Queue, ReviewItem
from reviewqueue.review.services import LeaseLost, ReviewError
from reviewqueue.web import rendering, selectors
from reviewqueue.web.corrections import CorrectionError, parse_correction
from reviewqueue.web.forms import VerdictForm, labels_from_post, rubric_fields

TEMPLATE = "web/review.html"
MAX_SKIPPED = 500
MAX_SECONDS_SPENT = 24 * 3600

VERDICT_DONE = {
    "approve": "Approved",
    "correct": "Corrected",
    "reject": "Rejected",
    "escalate": "Escalated",
    "skip": "Skipped",
}


def _skipped(request: HttpRequest, queue: Queue) -> list[int]:
    return list(request.session.get(f"skipped:{queue.pk}", []))


def _remember_skip(request: HttpRequest, queue: Queue, item_id: int) -> None:
    skipped = [*_skipped(request, queue), item_id][-MAX_SKIPPED:]
    request.session[f"skipped:{queue.pk}"] = skipped


def _workbench(
    request: HttpRequest,
    queue: Queue,
    item: ReviewItem | None,
    *,
    status: int = 200,
    notice: str = "",
    error: str = "",
    errors: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
) -> HttpResponse:
    """The page (or, for htmx, the #workbench fragment) showing `item`, or the empty queue."""
    ctx: dict[str, Any] = {
        "queue": queue,
        "item": item,
        "notice": notice,
        "error": error,
        "errors": errors or {},
        "last": last,
        "progress": selectors.progress(request.user, queue),
        "instructions": rendering.markdown_html(queue.instructions) if queue.instructions else "",
        "skipped_count": len(_skipped(request, queue)),
    }
    if item is not None:
        values = values or {}
        view = selectors.step_view(selectors.load_step(item.step_id))
        lease_left = (
            max(0, int((item.lease_expires_at - timezone.now()).total_seconds())) if item.lease_expires_at else 0
        )
        ctx.update(
            {
                "view": view,
                "step": view.step,
                "lease_left": lease_left,
                "heartbeat_seconds": max(5, min(60, queue.lease_seconds // 3)),
                "shown_at": values.get("shown_at") or f"{time.time():.3f}",
                "rubric": rubric_fields(queue.rubric, values.get("labels")),
                "output_text": values.get("output", view.editor_text),
                "reason": values.get("reason", ""),
                "comment": values.get("comment", ""),
                "open_panel": values.get("open_panel", ""),
            }
        )
    return render(request, f"{TEMPLATE}#workbench" if request.htmx else TEMPLATE, ctx, status=status)


def _queue_and_item(request: HttpRequest, slug: str, item_id: int) -> tuple[Queue, ReviewItem]:
    item = permissions.item_in_queue_for_reviewer(request.user, slug, item_id)
    return item.queue, item


@login_required
@require_GET
def review_queue(request: HttpRequest, slug: str) -> HttpResponse:
    """Claim (or resume) the user's next item in the queue and show it."""
    queue = permissions.queue_for_reviewer(request.user, slug)
    item = services.claim_next_item(queue=queue, user=request.user, exclude=_skipped(request, queue))
    return _workbench(request, queue, item)


@login_required
@require_POST
def reset_skipped(request: HttpRequest, slug: str) -> HttpResponse:
    """Offer the items skipped in this session again."""
    queue = permissions.queue_for_reviewer(request.user, slug)
    request.session.pop(f"skipped:{queue.pk}", None)
    item = services.claim_next_item(queue=queue, user=request.user)
    return _workbench(request, queue, item)


def _seconds_spent(shown_at: float | None) -> float | None:
    if shown_at is None:
        return None
    spent = time.time() - shown_at
    return round(spent, 1) if 0 <= spent <= MAX_SECONDS_SPENT else None


@login_required
@require_POST
def verdict(request: HttpRequest, slug: str, item_id: int) -> HttpResponse:
    """Record a verdict (or a skip) on the item the user holds and answer with the next item.

    Refusals keep the reviewer's typed input: an invalid correction or a missing reason re-shows
    the same item with the message (422, nothing saved); a lost lease says so and offers the
    next item (409)."""
    queue, item = _queue_and_item(request, slug, item_id)
    form = VerdictForm(request.POST)
    if not form.is_valid():
        return _workbench(request, queue, item, status=400, error="Unknown verdict: choose one of the actions below.")
    data = form.cleaned_data
    chosen = data["verdict"]
    labels = labels_from_post(queue.rubric, request.POST)
    typed = {
        "output": data["output"],
        "reason": data["reason"],
        "comment": data["comment"],
        "labels": labels,
        "shown_at": request.POST.get("shown_at", ""),
        "open_panel": chosen if chosen in ("correct", "reject") else "",
    }
    user = request.user
    skipped = _skipped(request, queue)

    if chosen == "skip":
        try:
            following = services.skip_item(item_id=item.pk, user=user, exclude=skipped)
        except LeaseLost as exc:
            following = services.claim_next_item(queue=queue, user=user, exclude=skipped)
            return _workbench(request, queue, following, status=409, error=exc.message)
        _remember_skip(request, queue, item.pk)
        return _workbench(request, queue, following, notice=f"Skipped item {item.pk}; it went back to the queue.")

    step = item.step
    output = None
    if chosen == "correct":
        try:
            output = parse_correction(data["output"], original=step.output, step_input=step.input)
        except CorrectionError as exc:
            return _workbench(request, queue, item, status=422, error=exc.message + " Nothing was saved.", values=typed)
    try:
        review = services.submit_review(
            item_id=item.pk,
            user=user,
            verdict=chosen,
            output=output,
            reason=data["reason"],
            labels=labels,
            comment=data["comment"],
            seconds_spent=_seconds_spent(data["shown_at"]),
        )
    except LeaseLost as exc:
        following = services.claim_next_item(queue=queue, user=user, exclude=skipped)
        message = f"{exc.message} Your verdict was not saved."
        return _workbench(request, queue, following, status=409, error=message)
    except ReviewError as exc:
        return _workbench(request, queue, item, status=422, error=exc.message, errors=exc.errors, values=typed)
    last = {
        "verdict": chosen,
        "done": VERDICT_DONE[chosen],
        "item": item.pk,
        "review_id": review.pk,
        "step": step,
        "diff": rendering.output_diff(step.output, output) if chosen == "correct" else None,
    }
    following = services.claim_next_item(queue=queue, user=user, exclude=skipped)
    return _workbench(request, queue, following, last=last)


@login_required
@require_POST
def heartbeat(request: HttpRequest, slug: str, item_id: int) -> HttpResponse:
    """Keep the lease alive while the page is open; say so plainly when it was lost."""
    queue, item = _queue_and_item(request, slug, item_id)
    ctx: dict[str, Any] = {"queue": queue, "item": item, "heartbeat_seconds": max(5, min(60, queue.lease_seconds // 3))}
    try:
        item = services.heartbeat(item_id=item.pk, user=request.user)
        ctx["lease_left"] = max(0, int((item.lease_expires_at - timezone.now()).total_seconds()))
    except LeaseLost as exc:
        ctx["lease_lost"] = exc.message
    return render(request, f"{TEMPLATE}#lease", ctx)


@login_required
@require_POST
def correction_diff(request: HttpRequest, slug: str, item_id: int) -> HttpResponse:
    """The diff of the editor's text against the agent's output, as the reviewer types."""
    _queue, item = _queue_and_item(request, slug, item_id)
    step = item.step
    ctx: dict[str, Any] = {}
    try:
        corrected = parse_correction(request.POST.get("output", ""), original=step.output, step_input=step.input)
        ctx["diff"] = rendering.output_diff(step.output, corrected)
    except CorrectionError as exc:
        ctx["diff_error"] = exc.message
    return render(request, "web/_step.html#diff", ctx)
