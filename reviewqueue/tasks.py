"""django-q2 task functions and their schedules.

`ensure_schedules()` is idempotent: call it after migrating (`manage.py ensure_schedules`).
"""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)

SWEEP_SCHEDULE_NAME = "reviewqueue.sweep"


def sweep() -> dict[str, int]:
    """Return expired leases to their queues, then apply SLA timeout actions."""
    from reviewqueue.review.services import apply_timeouts, sweep_expired_leases

    result = {"leases_expired": sweep_expired_leases(), "timeouts": apply_timeouts()}
    if any(result.values()):
        logger.info("sweep: %s", result)
    return result


def ensure_schedules() -> list[str]:
    """Create or update the schedules this project needs; returns their names."""
    from django_q.models import Schedule

    minutes = max(1, int(getattr(settings, "SWEEP_INTERVAL_MINUTES", 1)))
    Schedule.objects.update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={
            "func": "reviewqueue.tasks.sweep",
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
        },
    )
    from reviewqueue.hooks.tasks import SCHEDULE_NAME as WEBHOOKS_SCHEDULE_NAME

    Schedule.objects.update_or_create(
        name=WEBHOOKS_SCHEDULE_NAME,
        defaults={
            "func": "reviewqueue.hooks.tasks.deliver_due_webhooks",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    return [SWEEP_SCHEDULE_NAME, WEBHOOKS_SCHEDULE_NAME]
