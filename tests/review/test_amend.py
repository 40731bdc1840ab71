"""amend_review: a reviewer changes their own decision until it is exported; skip_item."""

from __future__ import annotations

import pytest
from django.utils import timezone

from reviewqueue.core.models import AuditEvent, StepStatus
from reviewqueue.review import signals
from reviewqueue.review.models import Decision, ItemStatus, Review
from reviewqueue.review.services import (
    Conflict,
    ItemNotFound,
    ReviewError,
    amend_review,
    claim_next_item,
    skip_item,
    submit_review,
)
from tests.factories import QueueFactory, ReviewItemFactory

pytestmark = pytest.mark.django_db


def decide(queue, user, verdict="approve", **kwargs):
    item = claim_next_item(queue=queue, user=user)
    return submit_review(item_id=item.pk, user=user, verdict=verdict, **kwargs)


def test_amend_single_decision_redecides_the_step_and_audits(queue, alice, django_capture_on_commit_callbacks):
    ReviewItemFactory(queue=queue)
    review = decide(queue, alice, "approve")
    sent = []
    signals.step_decided.connect(lambda **kw: sent.append(kw["step_id"]), weak=False, dispatch_uid="amend-test")
    try:
        corrected = {"role": "assistant", "content": "It ships tomorrow."}
        with django_capture_on_commit_callbacks(execute=True):
            amended = amend_review(review_id=review.pk, user=alice, verdict="correct", output=corrected)
    finally:
        signals.step_decided.disconnect(dispatch_uid="amend-test")
    assert amended.amended_at is not None
    decision = Decision.objects.get(step=review.item.step)
    assert decision.verdict == StepStatus.CORRECTED
    assert decision.output == corrected
    review.item.step.refresh_from_db()
    assert review.item.step.status == StepStatus.CORRECTED
    events = {e.action: e for e in AuditEvent.objects.filter(action__in=["review.amended", "decision.amended"])}
    assert events["review.amended"].before["verdict"] == "approve"
    assert events["review.amended"].after["verdict"] == "correct"
    assert events["decision.amended"].before["verdict"] == "approved"
    assert events["decision.amended"].after["output"] == corrected
    assert sent == [review.item.step_id]


def test_amend_is_refused_once_exported_and_nothing_changes(queue, alice):
    ReviewItemFactory(queue=queue)
    review = decide(queue, alice, "approve")
    Decision.objects.filter(step=review.item.step).update(exported_at=timezone.now())
    with pytest.raises(Conflict, match="exported in a dataset version"):
        amend_review(review_id=review.pk, user=alice, verdict="reject", reason="wrong")
    review.refresh_from_db()
    assert review.verdict == "approve" and review.amended_at is None
    assert Decision.objects.get(step=review.item.step).verdict == StepStatus.APPROVED
    assert not AuditEvent.objects.filter(action="review.amended").exists()


def test_only_the_reviewer_can_amend(queue, alice, bob):
    ReviewItemFactory(queue=queue)
    review = decide(queue, alice, "approve")
    with pytest.raises(ItemNotFound):
        amend_review(review_id=review.pk, user=bob, verdict="reject", reason="no")


def test_amend_validates_like_a_review(queue, alice):
    ReviewItemFactory(queue=queue)
    review = decide(queue, alice, "approve")
    with pytest.raises(ReviewError) as refused:
        amend_review(review_id=review.pk, user=alice, verdict="reject", reason="  ")
    assert "reason" in refused.value.errors
    with pytest.raises(ReviewError) as refused:
        amend_review(review_id=review.pk, user=alice, verdict="escalate")
    assert "verdict" in refused.value.errors


def test_amend_agreement_must_still_agree(alice, bob):
    queue = QueueFactory(slug="pairs", members=[alice, bob], reviews_required=2)
    ReviewItemFactory(queue=queue)
    decide(queue, alice, "approve")
    second = decide(queue, bob, "approve")
    assert Decision.objects.get(step=second.item.step).method == "agreement"
    with pytest.raises(Conflict, match="would disagree"):
        amend_review(review_id=second.pk, user=bob, verdict="reject", reason="bad")
    second.refresh_from_db()
    assert second.verdict == "approve"
    # Agreeing changes of the comment are fine.
    amend_review(review_id=second.pk, user=bob, verdict="approve", comment="fine after all")
    assert Review.objects.get(pk=second.pk).comment == "fine after all"


def test_amend_before_the_item_is_decided_changes_only_the_review(alice, bob):
    queue = QueueFactory(slug="pairs", members=[alice, bob], reviews_required=2)
    ReviewItemFactory(queue=queue)
    first = decide(queue, alice, "approve")
    amend_review(review_id=first.pk, user=alice, verdict="reject", reason="on second thought")
    first.refresh_from_db()
    assert first.verdict == "reject" and first.item.status == ItemStatus.PENDING
    assert not Decision.objects.exists()


def test_escalations_cannot_be_amended(queue, alice):
    ReviewItemFactory(queue=queue)
    review = decide(queue, alice, "escalate")
    with pytest.raises(Conflict, match="escalated"):
        amend_review(review_id=review.pk, user=alice, verdict="approve")


def test_skip_releases_and_offers_another_item(queue, alice):
    first = ReviewItemFactory(queue=queue, priority=5)
    second = ReviewItemFactory(queue=queue)
    assert claim_next_item(queue=queue, user=alice) == first
    following = skip_item(item_id=first.pk, user=alice)
    assert following == second
    first.refresh_from_db()
    assert first.status == ItemStatus.PENDING and first.claimed_by is None
    # Skipping the last one with the first already skipped: nothing left.
    assert skip_item(item_id=second.pk, user=alice, exclude=[first.pk]) is None
    assert claim_next_item(queue=queue, user=alice) == first  # without the exclusion it comes back
