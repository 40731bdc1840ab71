"""A reviewer's history: what they decided, searchable; reopening and amending their own decision."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from reviewqueue.review import permissions, services
from reviewqueue.review.models import Decision
from reviewqueue.review.services import ReviewError
from reviewqueue.web import rendering, selectors
from reviewqueue.web.corrections import CorrectionError, parse_correction
from reviewqueue.web.forms import AMEND_CHOICES, AmendForm, HistorySearchForm, labels_from_post, rubric_fields

PAGE_SIZE = 50


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    form = HistorySearchForm(request.GET)
    search = verdict = ""
    if form.is_valid():
        search, verdict = form.cleaned_data["q"], form.cleaned_data["verdict"]
    page = Paginator(selectors.history(request.user, search=search, verdict=verdict), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    rows = []
    for review in page.object_list:
        decision = getattr(review.item.step, "decision", None)
        rows.append(
            {
                "review": review,
                "decision": decision,
                "problem": services.amendment_problem(review, decision),
                "diff": rendering.output_diff(review.item.step.output, review.output)
                if review.verdict == "correct"
                else None,
            }
        )
    query = request.GET.copy()
    query.pop("page", None)
    ctx = {"form": form, "page": page, "rows": rows, "query": query.urlencode()}
    return render(request, "web/history.html#results" if request.htmx else "web/history.html", ctx)


@login_required
@require_http_methods(["GET", "POST"])
def amend(request: HttpRequest, review_id: int) -> HttpResponse:
    """Reopen one of the user's reviews and amend it (audited; refused once exported)."""
    review = permissions.review_for_owner(request.user, review_id)
    item, step = review.item, review.item.step
    decision = Decision.objects.filter(step_id=step.pk).select_related("reviewer").first()
    problem = services.amendment_problem(review, decision)
    view = selectors.step_view(selectors.load_step(step.pk))
    ctx: dict[str, Any] = {
        "review": review,
        "decision": decision,
        "problem": problem,
        "view": view,
        "step": view.step,
        "queue": item.queue,
        "verdict": review.verdict,
        "output_text": rendering.editable_output(review.output)[1] if review.output is not None else view.editor_text,
        "reason": review.reason,
        "comment": review.comment,
        "rubric": rubric_fields(item.queue.rubric, review.labels),
        "error": "",
        "verdicts": AMEND_CHOICES,
    }
    if request.method == "GET" or problem:
        return render(request, "web/amend.html", ctx, status=409 if request.method == "POST" else 200)
    form = AmendForm(request.POST)
    labels = labels_from_post(item.queue.rubric, request.POST)
    ctx.update(
        {
            "verdict": request.POST.get("verdict", ""),
            "output_text": request.POST.get("output", ""),
            "reason": request.POST.get("reason", ""),
            "comment": request.POST.get("comment", ""),
            "rubric": rubric_fields(item.queue.rubric, labels),
        }
    )
    if not form.is_valid():
        ctx["error"] = "Choose a verdict: approve, correct or reject."
        return render(request, "web/amend.html", ctx, status=422)
    data = form.cleaned_data
    output = None
    try:
        if data["verdict"] == "correct":
            output = parse_correction(data["output"], original=step.output, step_input=step.input)
        services.amend_review(
            review_id=review.pk,
            user=request.user,
            verdict=data["verdict"],
            output=output,
            reason=data["reason"],
            labels=labels,
            comment=data["comment"],
        )
    except CorrectionError as exc:
        ctx["error"] = exc.message + " Nothing was saved."
        return render(request, "web/amend.html", ctx, status=422)
    except ReviewError as exc:
        ctx["error"] = exc.message
        return render(request, "web/amend.html", ctx, status=exc.status_code if exc.status_code != 400 else 422)
    messages.success(request, f"Your review of item {item.pk} was amended.")
    return redirect("web:history")
