"""The project's URLs plus the baseline views: a bare Django view, and one behind login."""

from __future__ import annotations

import os
import threading

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def bare(request: HttpRequest) -> HttpResponse:
    """The cheapest thing Django can answer through the full middleware stack."""
    return HttpResponse("ok")


@login_required
def bare_logged_in(request: HttpRequest) -> HttpResponse:
    """The same, behind a session login: adds the session and user lookups a page pays for."""
    return HttpResponse(f"ok {request.user.pk}")


async def waiters(request: HttpRequest) -> JsonResponse:
    """Figure 6: how many long-polls this server process holds, its pid and thread count."""
    from reviewqueue.hooks.notify import get_hub

    return JsonResponse({"waiting": get_hub().waiting, "pid": os.getpid(), "threads": threading.active_count()})


urlpatterns = [
    path("bench/waiters", waiters),
    path("bench/bare", bare),
    path("bench/bare-login", bare_logged_in),
    path("", include("reviewqueue.urls")),
]
