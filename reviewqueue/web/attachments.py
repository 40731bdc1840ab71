"""Images of steps, served from our own normalised copies (never the agent's bytes or URLs)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from reviewqueue.review import permissions


@login_required
@require_GET
def attachment(request: HttpRequest, attachment_id: int, variant: str = "image") -> FileResponse:
    found = permissions.attachment_for_viewer(request.user, attachment_id)
    stored = found.thumbnail if variant == "thumbnail" else found.image
    try:
        handle = stored.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404("The image file is missing.") from None
    response = FileResponse(handle, content_type=found.content_type)
    response["Content-Disposition"] = "inline"
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response
