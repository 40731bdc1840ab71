"""One error shape for the whole API: {"detail": "...", "errors": {...field errors...}}."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError) and not (
        isinstance(response.data, dict) and "detail" in response.data and len(response.data) <= 2
    ):
        response.data = {"detail": _summary(response.data), "errors": response.data}
    return response


def _summary(errors: Any) -> str:
    """A one-line message naming the first failing field, e.g. "confidence: must be between 0 and 1"."""
    path: list[str] = []
    node = errors
    while True:
        if isinstance(node, dict) and node:
            key, node = next(iter(node.items()))
            path.append(str(key))
        elif isinstance(node, list) and node:
            node = node[0]
        else:
            break
    field = ".".join(p for p in path if p != "non_field_errors")
    message = str(node)
    return f"{field}: {message}" if field else message


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any path under /api/ that no endpoint matches: a 404 in the API's error shape, not the
    site's HTML page (a client parsing JSON gets JSON)."""
    return JsonResponse({"detail": f"no API endpoint at {request.path} (see /api/docs/)"}, status=404)
