"""seed_demo builds a usable demo through the real ingest and routing paths, and is idempotent."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count

from evals.services import freeze_version, save_dataset
from reviewqueue.core.models import Attachment, Step, StepStatus
from reviewqueue.review.models import Decision, Queue, ReviewItem
from reviewqueue.routing.models import RoutingRule


@pytest.mark.django_db
def test_seed_demo_creates_a_routed_demo_and_replays_cleanly() -> None:
    out = io.StringIO()
    call_command("seed_demo", "--traces", "40", stdout=out)

    users = get_user_model().objects
    assert users.get(username="admin").is_staff
    reviewer = users.get(username="reviewer")
    assert not reviewer.is_staff and reviewer.check_password("reviewqueue-demo")
    assert set(Queue.objects.values_list("slug", flat=True)) >= {"support-answers", "tool-calls", "computer-use"}
    assert RoutingRule.objects.count() >= 4

    steps = Step.objects.count()
    assert steps > 100
    # Routing decided: some steps wait for review, the rest were auto-approved, none undecided.
    assert Step.objects.filter(status=StepStatus.PENDING_REVIEW).exists()
    assert Step.objects.filter(status=StepStatus.AUTO_APPROVED).exists()
    routed = Step.objects.filter(status=StepStatus.PENDING_REVIEW)
    assert ReviewItem.objects.filter(step__in=routed).count() == routed.count()
    assert not routed.filter(rule__isnull=True).exists()
    assert Step.objects.filter(kind="tool_call", name="issue_refund").exists()
    assert Attachment.objects.count() == 8
    assert "reviewqueue-demo" in out.getvalue()
    # A short review history, through the review services: datasets have cases to export.
    pending = ReviewItem.objects.filter(queue__slug="support-answers", status="pending").count()
    decisions = dict(Decision.objects.values_list("verdict").annotate(n=Count("id")).values_list("verdict", "n"))
    decided = sum(decisions.values())
    assert set(decisions) == {"approved", "corrected", "rejected"} and decided == min(30, decided + pending)
    mine = Decision.objects.filter(item__queue__slug="support-answers", reviewer__username="reviewer")
    assert mine.count() == decided and f"reviewer decided {decided} support answers" in out.getvalue()
    version = freeze_version(dataset=save_dataset(data={"name": "demo"}))
    assert version.case_count == decided and version.counts["verdict"] == decisions

    call_command("seed_demo", "--traces", "40", stdout=io.StringIO())
    assert Decision.objects.count() == decided  # the history is made once
    assert Step.objects.count() == steps
    assert Attachment.objects.count() == 8
