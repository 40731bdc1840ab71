"""Security headers for HTML pages."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

# No inline scripts anywhere: scripts come from our own static files; htmx's indicator styles
# are turned off (htmx.config.includeIndicatorStyles) so no inline style is needed either.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith("/api/docs"):
            return response  # the Swagger UI page is drf-spectacular's own
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
