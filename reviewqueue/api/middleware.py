"""Request-size guard for the API: bodies over settings.MAX_REQUEST_BYTES answer 413 (JSON).

A declared Content-Length over the limit is refused before anything is read. A body without a
Content-Length (chunked transfer encoding) is read here, at most one byte past the limit, and
handed on as an ordinary buffered body with its Content-Length set, so the views (and DRF, which
ignores bodies without a Content-Length) see it whole.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

API_PREFIX = "/api/"


def _too_large(limit: int) -> JsonResponse:
    return JsonResponse(
        {"detail": f"request body too large: the limit is {limit} bytes; send smaller batches"},
        status=413,
    )


class RequestSizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(API_PREFIX):
            refused = self.check(request)
            if refused is not None:
                return refused
        return self.get_response(request)

    def check(self, request: HttpRequest) -> HttpResponse | None:
        limit = settings.MAX_REQUEST_BYTES
        declared = request.META.get("CONTENT_LENGTH")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                return JsonResponse({"detail": "invalid Content-Length header"}, status=400)
            return _too_large(limit) if length > limit else None
        if "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            return None
        body = self._read_unsized(request, limit)
        if len(body) > limit:
            return _too_large(limit)
        request._body = body  # type: ignore[attr-defined]
        request._stream = BytesIO(body)  # type: ignore[attr-defined]
        request._read_started = True  # type: ignore[attr-defined]
        request.META["CONTENT_LENGTH"] = str(len(body))
        return None

    @staticmethod
    def _read_unsized(request: HttpRequest, limit: int) -> bytes:
        environ = getattr(request, "environ", {})
        # WSGI with a server that de-chunks (gunicorn): Django's own stream is capped at a
        # Content-Length of 0, so read the server's input directly. ASGI: Django has buffered it.
        stream = environ["wsgi.input"] if environ.get("wsgi.input_terminated") else request
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = stream.read(min(64 * 1024, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
