"""Security headers for HTML pages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

# No inline scripts anywhere: scripts come from our own static files; htmx's indicator styles
# are turned off (htmx.config.includeIndicatorStyles) so no inline style is needed either.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    # Async-capable too: under ASGI a sync-only middleware would cost a thread per request
    # (and per waiting agent on the long-poll).
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        return self.add_header(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return self.add_header(request, await self.get_response(request))

    def add_header(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if request.path.startswith("/api/docs"):
            return response  # the Swagger UI page is drf-spectacular's own
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
