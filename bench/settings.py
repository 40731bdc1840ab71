"""The project's settings plus two things only the benchmark needs: a URLconf with bare
baseline views, and a middleware that reports server time and query counts per request."""

from __future__ import annotations

from reviewqueue.settings import *  # noqa: F403
from reviewqueue.settings import MIDDLEWARE

ROOT_URLCONF = "bench.urls"

# Outermost, so the time it reports covers every other middleware and the view.
MIDDLEWARE = ["bench.middleware.ServerTimingMiddleware", *MIDDLEWARE]
