"""Home: the user's queues with their counts and a way into each."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from reviewqueue.web import selectors


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    queues = selectors.home_queues(request.user)
    ctx = {
        "queues": queues,
        "done_today": sum(q.done_today for q in queues),
        "waiting": sum(q.waiting_count for q in queues),
    }
    return render(request, "web/home.html#queues" if request.htmx else "web/home.html", ctx)
