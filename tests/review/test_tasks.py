"""The sweep task and its django-q2 schedule; the admin's release action."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from reviewqueue.core.models import AuditEvent
from reviewqueue.review.models import ItemStatus, ReviewItem
from reviewqueue.tasks import SWEEP_SCHEDULE_NAME, ensure_schedules, sweep
from tests.factories import QueueFactory, ReviewItemFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_sweep_expires_leases_and_applies_timeouts() -> None:
    alice = UserFactory(username="alice")
    past = timezone.now() - timedelta(minutes=1)
    leased = ReviewItemFactory(status=ItemStatus.CLAIMED, claimed_by=alice, lease_expires_at=past)
    overdue = ReviewItemFactory(queue=QueueFactory(slug="sla", timeout_action="reject"), due_at=past)
    assert sweep() == {"leases_expired": 1, "timeouts": 1}
    assert ReviewItem.objects.get(pk=leased.pk).status == ItemStatus.PENDING
    assert ReviewItem.objects.get(pk=overdue.pk).status == ItemStatus.RESOLVED
    assert sweep() == {"leases_expired": 0, "timeouts": 0}


def test_ensure_schedules_is_idempotent_and_follows_the_setting(settings) -> None:
    settings.SWEEP_INTERVAL_MINUTES = 3
    ensure_schedules()
    call_command("ensure_schedules", stdout=StringIO())
    schedule = Schedule.objects.get(name=SWEEP_SCHEDULE_NAME)
    assert Schedule.objects.count() == 2  # the sweep and the webhook deliveries, each once
    assert (schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats) == (
        "reviewqueue.tasks.sweep",
        Schedule.MINUTES,
        3,
        -1,
    )


def test_admin_lists_items_and_releases_claimed_ones(client) -> None:
    boss = UserFactory(username="boss", is_staff=True, is_superuser=True)
    alice = UserFactory(username="alice")
    item = ReviewItemFactory(
        status=ItemStatus.CLAIMED, claimed_by=alice, lease_expires_at=timezone.now() + timedelta(minutes=5)
    )
    client.force_login(boss)
    for url in (
        "/admin/review/reviewitem/",
        "/admin/review/queue/",
        "/admin/review/review/",
        "/admin/review/decision/",
    ):
        assert client.get(url).status_code == 200, url
    assert client.get(f"/admin/review/queue/{item.queue_id}/change/").status_code == 200
    response = client.post(
        "/admin/review/reviewitem/", {"action": "release_items", "_selected_action": [item.pk]}, follow=True
    )
    assert response.status_code == 200 and "Released 1 item" in response.content.decode()
    item.refresh_from_db()
    assert (item.status, item.claimed_by) == (ItemStatus.PENDING, None)
    assert AuditEvent.objects.filter(action="item.released", object_id=str(item.pk), actor=boss).exists()
