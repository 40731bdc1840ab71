"""Review services: claim order and resume, membership, assignment, N distinct reviewers,
resolution (single, agreement, disagreement, escalation, adjudication), leases, rubric, timeouts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from reviewqueue.core.models import AuditEvent, StepStatus
from reviewqueue.review import queues, services
from reviewqueue.review.models import Decision, ItemStatus, Review, ReviewItem
from reviewqueue.review.selectors import queues_for_user
from reviewqueue.review.services import (
    Conflict,
    LeaseLost,
    NotAllowed,
    NotAMember,
    QueueError,
    ReviewError,
    adjudicate,
    apply_timeouts,
    assign_item,
    can_review,
    claim_next_item,
    heartbeat,
    release_item,
    submit_review,
    sweep_expired_leases,
)
from tests.factories import QueueFactory, ReviewItemFactory, UserFactory

pytestmark = pytest.mark.django_db


def actions(item: ReviewItem) -> list[str]:
    return list(
        AuditEvent.objects.filter(object_type="reviewitem", object_id=str(item.pk))
        .order_by("id")
        .values_list("action", flat=True)
    )


def expire(item: ReviewItem) -> None:
    ReviewItem.objects.filter(pk=item.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


# --- membership and claim order ------------------------------------------------------------------


def test_membership_is_direct_or_through_a_group_and_staff_are_not_implicit_members(queue, alice) -> None:
    carol, boss = UserFactory(username="carol"), UserFactory(username="boss", is_staff=True)
    assert can_review(user=alice, queue=queue)
    assert not can_review(user=carol, queue=queue)
    assert not can_review(user=boss, queue=queue)
    group = Group.objects.create(name="support")
    group.user_set.add(carol)
    queue.groups.add(group)
    assert can_review(user=carol, queue=queue)
    assert claim_next_item(queue=queue, user=carol) is None  # member via group, just nothing to do
    with pytest.raises(NotAMember):
        claim_next_item(queue=queue, user=boss)


def test_claims_by_priority_then_oldest_and_sets_the_lease(queue, alice) -> None:
    low_old = ReviewItemFactory(queue=queue, priority=0)
    high_new = ReviewItemFactory(queue=queue, priority=5)
    low_new = ReviewItemFactory(queue=queue, priority=0)
    ReviewItemFactory(priority=9)  # another queue
    before = timezone.now()
    item = claim_next_item(queue=queue, user=alice)
    assert item.pk == high_new.pk
    item.refresh_from_db()
    assert item.status == ItemStatus.CLAIMED and item.claimed_by == alice
    assert before + timedelta(seconds=299) <= item.lease_expires_at <= timezone.now() + timedelta(seconds=300)
    assert actions(item) == ["item.claimed"]
    release_item(item_id=item.pk, user=alice)
    # after releasing the top item, the same user gets it again first; a second user gets the next
    assert claim_next_item(queue=queue, user=alice).pk == high_new.pk
    bob = queue.members.get(username="bob")
    assert claim_next_item(queue=queue, user=bob).pk == low_old.pk
    assert low_new.pk > low_old.pk


def test_claim_resumes_the_users_live_claim(queue, alice, bob) -> None:
    first, second = ReviewItemFactory(queue=queue), ReviewItemFactory(queue=queue)
    assert claim_next_item(queue=queue, user=alice).pk == first.pk
    assert claim_next_item(queue=queue, user=alice).pk == first.pk
    assert claim_next_item(queue=queue, user=bob).pk == second.pk
    assert claim_next_item(queue=queue, user=bob).pk == second.pk
    assert ReviewItem.objects.filter(status=ItemStatus.CLAIMED).count() == 2
    assert len([a for a in actions(first) if a == "item.claimed"]) == 1


def test_nothing_left_returns_none(queue, alice) -> None:
    assert claim_next_item(queue=queue, user=alice) is None
    ReviewItemFactory(queue=queue, status=ItemStatus.RESOLVED)
    assert claim_next_item(queue=queue, user=alice) is None


def test_assigned_items_go_to_the_assignee_first_and_to_no_one_else(queue, alice, bob) -> None:
    boss = UserFactory(username="boss", is_staff=True)
    top = ReviewItemFactory(queue=queue, priority=9)
    low = ReviewItemFactory(queue=queue, priority=0)
    assign_item(item=low, assignee=bob, actor=boss)
    assign_item(item=top, assignee=alice, actor=boss)
    assert claim_next_item(queue=queue, user=bob).pk == low.pk
    submit_review(item_id=low.pk, user=bob, verdict="approve")
    # `top` is reserved for alice: bob gets nothing even though it is pending
    assert claim_next_item(queue=queue, user=bob) is None
    assign_item(item=top, assignee=None, actor=boss)
    assert claim_next_item(queue=queue, user=bob).pk == top.pk
    assert "item.assigned" in actions(top)


def test_assignment_is_staff_only_and_needs_a_reviewer(queue, alice) -> None:
    item = ReviewItemFactory(queue=queue)
    with pytest.raises(NotAllowed):
        assign_item(item=item, assignee=alice, actor=alice)
    with pytest.raises(ReviewError) as exc:
        assign_item(item=item, assignee=UserFactory(username="outsider"), actor=UserFactory(is_staff=True))
    assert "username" in exc.value.errors
    assert ReviewItem.objects.get(pk=item.pk).assigned_to is None


# --- reviews and resolution ----------------------------------------------------------------------


def test_single_review_approve_resolves_and_decides_the_step(queue, alice) -> None:
    item = ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    review = submit_review(item_id=item.pk, user=alice, verdict="approve", comment="fine", seconds_spent=3.5)
    item.refresh_from_db()
    assert review.verdict == "approve" and item.status == ItemStatus.RESOLVED and item.resolved_at
    assert item.claimed_by is None and item.reviews_count == 1
    decision = Decision.objects.get(step=item.step)
    assert (decision.verdict, decision.method, decision.reviewer, decision.output) == (
        "approved",
        "single",
        alice,
        item.step.output,
    )
    item.step.refresh_from_db()
    assert item.step.status == StepStatus.APPROVED
    assert actions(item) == ["item.claimed", "item.resolved"]
    assert AuditEvent.objects.filter(action="review.submitted", object_id=str(review.pk)).exists()
    assert AuditEvent.objects.filter(action="step.decided", object_id=str(item.step_id)).exists()


def test_correct_stores_the_correction_and_reject_has_no_output(queue, alice) -> None:
    fixed = {"role": "assistant", "content": "It ships tomorrow."}
    a, b = ReviewItemFactory(queue=queue), ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    submit_review(item_id=a.pk, user=alice, verdict="correct", output=fixed)
    claim_next_item(queue=queue, user=alice)
    submit_review(item_id=b.pk, user=alice, verdict="reject", reason="  made up  ")
    da, db = Decision.objects.get(step=a.step), Decision.objects.get(step=b.step)
    assert (da.verdict, da.output) == ("corrected", fixed)
    assert (db.verdict, db.output, db.reason) == ("rejected", None, "made up")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"verdict": "maybe"}, "verdict"),
        ({"verdict": "correct"}, "output"),
        ({"verdict": "correct", "output": {"role": "assistant", "content": "It shipped yesterday."}}, "output"),
        ({"verdict": "reject", "reason": "   "}, "reason"),
        ({"verdict": "approve", "seconds_spent": -1}, "seconds_spent"),
    ],
)
def test_bad_reviews_are_refused_naming_the_field_and_nothing_is_stored(queue, alice, kwargs, field) -> None:
    item = ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    with pytest.raises(ReviewError) as exc:
        submit_review(item_id=item.pk, user=alice, **kwargs)
    assert exc.value.status_code == 400 and field in exc.value.errors
    assert not Review.objects.exists()
    item.refresh_from_db()
    assert item.status == ItemStatus.CLAIMED and item.reviews_count == 0


def test_n_reviews_come_from_n_distinct_reviewers_and_agreement_resolves(alice, bob) -> None:
    queue = QueueFactory(slug="double", reviews_required=2, members=[alice, bob])
    item = ReviewItemFactory(queue=queue)
    assert claim_next_item(queue=queue, user=alice).pk == item.pk
    submit_review(item_id=item.pk, user=alice, verdict="reject", reason="wrong")
    item.refresh_from_db()
    assert item.status == ItemStatus.PENDING and item.reviews_count == 1 and item.claimed_by is None
    assert claim_next_item(queue=queue, user=alice) is None  # never twice to one reviewer
    assert claim_next_item(queue=queue, user=bob).pk == item.pk
    submit_review(item_id=item.pk, user=bob, verdict="reject", reason="hallucinated")
    decision = Decision.objects.get(step=item.step)
    assert (decision.verdict, decision.method, decision.reviewer) == ("rejected", "agreement", bob)
    assert decision.reason == "wrong; hallucinated"


def test_corrections_agree_only_when_the_outputs_are_equal(alice, bob) -> None:
    carol = UserFactory(username="carol")
    queue = QueueFactory(slug="double", reviews_required=2, members=[alice, bob, carol])
    same, different = ReviewItemFactory(queue=queue), ReviewItemFactory(queue=queue)
    for user, outputs in ((alice, ({"a": 1, "b": 2}, "x")), (bob, ({"b": 2, "a": 1}, "y"))):
        for item, output in zip((same, different), outputs, strict=True):
            assert claim_next_item(queue=queue, user=user).pk == item.pk
            submit_review(item_id=item.pk, user=user, verdict="correct", output=output)
    assert Decision.objects.get(step=same.step).method == "agreement"
    different.refresh_from_db()
    assert different.status == ItemStatus.ESCALATED
    assert not Decision.objects.filter(step=different.step).exists()
    assert claim_next_item(queue=queue, user=carol) is None


def test_disagreement_goes_to_the_escalation_queue(alice, bob) -> None:
    senior = UserFactory(username="senior")
    escalations = QueueFactory(slug="senior", members=[senior], sla_seconds=600)
    queue = QueueFactory(slug="double", reviews_required=2, members=[alice, bob], escalation_queue=escalations)
    item = ReviewItemFactory(queue=queue, priority=3)
    claim_next_item(queue=queue, user=alice)
    submit_review(item_id=item.pk, user=alice, verdict="approve")
    claim_next_item(queue=queue, user=bob)
    submit_review(item_id=item.pk, user=bob, verdict="reject", reason="no")
    item.refresh_from_db()
    assert item.status == ItemStatus.ESCALATED
    copy = ReviewItem.objects.get(queue=escalations)
    assert (copy.step_id, copy.priority, copy.escalated_from_id, copy.status) == (item.step_id, 3, item.pk, "pending")
    assert "item.escalated" in actions(item)
    # the senior reviewer decides; the original escalated item is closed too
    assert claim_next_item(queue=escalations, user=senior).pk == copy.pk
    submit_review(item_id=copy.pk, user=senior, verdict="approve")
    item.refresh_from_db()
    assert item.status == ItemStatus.RESOLVED
    assert Decision.objects.get(step=item.step).reviewer == senior


def test_escalate_verdict_without_escalation_queue_waits_for_adjudication(queue, alice) -> None:
    boss = UserFactory(username="boss", is_staff=True)
    item = ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    submit_review(item_id=item.pk, user=alice, verdict="escalate", reason="policy question")
    item.refresh_from_db()
    assert item.status == ItemStatus.ESCALATED and not ReviewItem.objects.exclude(pk=item.pk).exists()
    with pytest.raises(NotAllowed):
        adjudicate(item=item, actor=alice, verdict="approve")
    with pytest.raises(ReviewError) as exc:
        adjudicate(item=item, actor=boss, verdict="escalate")
    assert "verdict" in exc.value.errors
    decision = adjudicate(item=item, actor=boss, verdict="correct", output="better", reason="house style")
    assert (decision.verdict, decision.method, decision.output, decision.reviewer) == (
        "corrected",
        "adjudicated",
        "better",
        boss,
    )
    with pytest.raises(Conflict):
        adjudicate(item=item, actor=boss, verdict="approve")


# --- leases ----------------------------------------------------------------------------------------


def test_a_review_on_an_expired_lease_is_refused_and_someone_else_can_claim(queue, alice, bob) -> None:
    item = ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    expire(item)
    with pytest.raises(LeaseLost, match=rf"Your lease on item {item.pk} expired at"):
        submit_review(item_id=item.pk, user=alice, verdict="approve")
    assert claim_next_item(queue=queue, user=bob).pk == item.pk  # claim ignores expired leases
    with pytest.raises(LeaseLost, match="held by another reviewer"):
        submit_review(item_id=item.pk, user=alice, verdict="approve")
    assert not Review.objects.exists()


def test_sweep_returns_expired_leases_to_pending_and_the_message_says_so(queue, alice) -> None:
    item, live = ReviewItemFactory(queue=queue), ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    expire(item)
    claim_next_item(queue=queue, user=queue.members.get(username="bob"))
    assert sweep_expired_leases() == 1
    item.refresh_from_db()
    assert (item.status, item.claimed_by, item.lease_expires_at) == (ItemStatus.PENDING, None, None)
    assert ReviewItem.objects.get(pk=live.pk).status == ItemStatus.CLAIMED
    assert actions(item)[-1] == "item.lease_expired"
    with pytest.raises(LeaseLost, match=rf"Your lease on item {item.pk} expired at .*went back to the queue"):
        submit_review(item_id=item.pk, user=alice, verdict="approve")
    assert sweep_expired_leases() == 0


def test_release_and_heartbeat_are_for_the_holder_only(queue, alice, bob) -> None:
    item = ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    with pytest.raises(LeaseLost):
        release_item(item_id=item.pk, user=bob)
    with pytest.raises(LeaseLost):
        heartbeat(item_id=item.pk, user=bob)
    ReviewItem.objects.filter(pk=item.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=5))
    extended = heartbeat(item_id=item.pk, user=alice)
    assert extended.lease_expires_at > timezone.now() + timedelta(seconds=290)
    release_item(item_id=item.pk, user=alice)
    assert ReviewItem.objects.get(pk=item.pk).status == ItemStatus.PENDING
    with pytest.raises(LeaseLost, match="was released"):
        submit_review(item_id=item.pk, user=alice, verdict="approve")
    with pytest.raises(LeaseLost):
        release_item(item_id=item.pk, user=alice)


def test_a_resolved_item_refuses_further_reviews(queue, alice) -> None:
    item = ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    submit_review(item_id=item.pk, user=alice, verdict="approve")
    with pytest.raises(LeaseLost, match="no longer open"):
        submit_review(item_id=item.pk, user=alice, verdict="approve")
    with pytest.raises(services.ItemNotFound):
        submit_review(item_id=999999, user=alice, verdict="approve")


# --- rubric ------------------------------------------------------------------------------------------

RUBRIC = [
    {"name": "tone", "type": "choice", "options": ["ok", "rude"], "required": True},
    {"name": "issues", "type": "multi_choice", "options": ["facts", "format"]},
    {"name": "quality", "type": "rating", "min": 1, "max": 5},
    {"name": "note", "type": "text"},
]


@pytest.mark.parametrize(
    ("labels", "bad"),
    [
        ({}, "tone"),
        ({"tone": "meh"}, "tone"),
        ({"tone": "ok", "issues": ["spelling"]}, "issues"),
        ({"tone": "ok", "quality": 6}, "quality"),
        ({"tone": "ok", "quality": True}, "quality"),
        ({"tone": "ok", "note": 3}, "note"),
        ({"tone": "ok", "colour": "red"}, "colour"),
    ],
)
def test_labels_are_checked_against_the_rubric(alice, labels, bad) -> None:
    queue = QueueFactory(slug="rubric", rubric=RUBRIC, members=[alice])
    item = ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    with pytest.raises(ReviewError) as exc:
        submit_review(item_id=item.pk, user=alice, verdict="approve", labels=labels)
    assert list(exc.value.errors) == ["labels"] and bad in exc.value.errors["labels"]
    assert f"labels: {bad}:" in exc.value.message
    good = {"tone": "ok", "issues": ["facts"], "quality": 4, "note": "fine"}
    assert submit_review(item_id=item.pk, user=alice, verdict="approve", labels=good).labels == good


def test_a_queue_without_rubric_accepts_only_empty_labels(queue, alice) -> None:
    item = ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    with pytest.raises(ReviewError):
        submit_review(item_id=item.pk, user=alice, verdict="approve", labels={"x": 1})
    assert submit_review(item_id=item.pk, user=alice, verdict="approve", labels={}).labels == {}


# --- timeouts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "step_status", "reason"),
    [("auto_approve", "approved", ""), ("reject", "rejected", "SLA expired")],
)
def test_overdue_items_are_decided_by_the_timeout_action(alice, action, step_status, reason) -> None:
    queue = QueueFactory(slug="sla", timeout_action=action, members=[alice])
    past = timezone.now() - timedelta(minutes=1)
    overdue, claimed = ReviewItemFactory(queue=queue, due_at=past), ReviewItemFactory(queue=queue, due_at=past)
    ReviewItem.objects.filter(pk=claimed.pk).update(status=ItemStatus.CLAIMED, claimed_by=alice)
    ReviewItemFactory(queue=queue, due_at=timezone.now() + timedelta(hours=1))
    ReviewItemFactory(queue=QueueFactory(slug="relaxed"), due_at=past)  # timeout_action none
    assert apply_timeouts() == 2
    for item in (overdue, claimed):
        decision = Decision.objects.get(step=item.step)
        assert (decision.verdict, decision.method, decision.reason, decision.reviewer) == (
            step_status,
            "timeout",
            reason,
            None,
        )
        assert ReviewItem.objects.get(pk=item.pk).status == ItemStatus.RESOLVED
    assert apply_timeouts() == 0


def test_timeout_escalate_moves_items_to_the_escalation_queue(alice) -> None:
    senior = QueueFactory(slug="senior", sla_seconds=3600)
    queue = QueueFactory(slug="sla", timeout_action="escalate", escalation_queue=senior, members=[alice])
    item = ReviewItemFactory(queue=queue, due_at=timezone.now() - timedelta(minutes=1))
    assert apply_timeouts() == 1
    copy = ReviewItem.objects.get(queue=senior)
    assert copy.due_at > timezone.now() + timedelta(minutes=59)
    assert ReviewItem.objects.get(pk=item.pk).status == ItemStatus.ESCALATED
    assert apply_timeouts() == 0


# --- queues ----------------------------------------------------------------------------------------


def test_save_queue_validates_and_names_every_bad_field(alice) -> None:
    QueueFactory(slug="taken")
    with pytest.raises(QueueError) as exc:
        queues.save_queue(
            data={
                "slug": "taken",
                "name": "",
                "reviews_required": 6,
                "lease_seconds": 5,
                "sla_seconds": 0,
                "timeout_action": "panic",
                "escalation_queue": "nowhere",
                "members": ["alice", "ghost", "phantom"],
                "groups": ["nobody"],
                "rubric": [{"name": "tone", "type": "choice"}],
                "colour": "blue",
            },
            actor=alice,
        )
    errors = exc.value.errors
    assert set(errors) == {
        "slug",
        "name",
        "reviews_required",
        "lease_seconds",
        "sla_seconds",
        "timeout_action",
        "escalation_queue",
        "members",
        "groups",
        "rubric",
        "colour",
    }
    assert "ghost, phantom" in errors["members"][0]


def test_save_queue_creates_updates_audits_and_skips_no_op_updates(alice, bob) -> None:
    Group.objects.create(name="support")
    queue = queues.save_queue(
        data={"slug": "q", "name": "Q", "members": ["bob", "alice"], "groups": ["support"], "rubric": RUBRIC},
        actor=alice,
    )
    assert queue.changed and set(queue.members.values_list("username", flat=True)) == {"alice", "bob"}
    same = queues.save_queue(data={"members": ["alice", "bob"], "name": "Q"}, actor=alice, queue=queue)
    assert same.changed is False
    updated = queues.save_queue(data={"reviews_required": 2, "members": ["alice"]}, actor=alice, queue=queue)
    assert updated.changed and updated.reviews_required == 2
    events = AuditEvent.objects.filter(object_type="queue", object_id=str(queue.pk)).order_by("id")
    assert [e.action for e in events] == ["queue.created", "queue.updated"]
    assert events[1].before["members"] == ["alice", "bob"] and events[1].after["members"] == ["alice"]
    with pytest.raises(QueueError, match="escalate to itself"):
        queues.save_queue(data={"escalation_queue": "q"}, actor=alice, queue=queue)


def test_delete_queue_refuses_queues_with_items(queue, alice) -> None:
    ReviewItemFactory(queue=queue)
    with pytest.raises(Conflict, match="1 open"):
        queues.delete_queue(queue=queue, actor=alice)
    empty = QueueFactory(slug="empty")
    queues.delete_queue(queue=empty, actor=alice)
    assert AuditEvent.objects.filter(action="queue.deleted", before__slug="empty").exists()


def test_queues_for_user_counts_in_one_query(queue, alice, bob, django_assert_num_queries) -> None:
    QueueFactory(slug="elsewhere")
    past = timezone.now() - timedelta(minutes=1)
    ReviewItemFactory(queue=queue, due_at=past)
    ReviewItemFactory(queue=queue)
    done = ReviewItemFactory(queue=queue)
    ReviewItemFactory(queue=queue)
    assign_item(item=done, assignee=alice, actor=UserFactory(is_staff=True))
    claim_next_item(queue=queue, user=alice)
    submit_review(item_id=done.pk, user=alice, verdict="approve")
    claim_next_item(queue=queue, user=bob)
    with django_assert_num_queries(1):
        rows = list(queues_for_user(alice))
    assert [(q.slug, q.pending_count, q.claimed_count, q.overdue_count, q.done_today) for q in rows] == [
        ("answers", 2, 1, 1, 1)
    ]
    assert len(queues_for_user(alice, include_all=True)) == 2
