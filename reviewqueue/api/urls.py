"""All of /api/v1/. Each resource module holds its own views and `urlpatterns`."""

from evals import api as evals_api
from reviewqueue.api import items, queues, rules, steps
from reviewqueue.hooks import api as webhooks

urlpatterns = [
    *steps.urlpatterns,
    *queues.urlpatterns,
    *items.urlpatterns,
    *rules.urlpatterns,
    *evals_api.urlpatterns,
    *webhooks.urlpatterns,
]
