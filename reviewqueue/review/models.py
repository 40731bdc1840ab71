"""Queues, the items in them, reviewers' verdicts and the decisions they resolve to."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone


class TimeoutAction(models.TextChoices):
    NONE = "none"
    AUTO_APPROVE = "auto_approve"
    REJECT = "reject"
    ESCALATE = "escalate"


class Queue(models.Model):
    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=120)
    instructions = models.TextField(blank=True, help_text="Markdown, shown to reviewers.")
    reviews_required = models.PositiveSmallIntegerField(default=1)
    lease_seconds = models.PositiveIntegerField(default=300)
    sla_seconds = models.PositiveIntegerField(null=True, blank=True)
    timeout_action = models.CharField(max_length=20, choices=TimeoutAction.choices, default=TimeoutAction.NONE)
    escalation_queue = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="escalated_from"
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="review_queues")
    groups = models.ManyToManyField(Group, blank=True, related_name="review_queues")
    # A list of {"name", "type": choice|multi_choice|rating|text, "options"?, "min"?, "max"?, "required"?}.
    rubric = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(reviews_required__gte=1, reviews_required__lte=5),
                name="queue_reviews_required_1_to_5",
            ),
            models.CheckConstraint(condition=models.Q(lease_seconds__gte=10), name="queue_lease_at_least_10s"),
        ]

    def __str__(self) -> str:
        return self.name


class ItemStatus(models.TextChoices):
    PENDING = "pending"
    CLAIMED = "claimed"
    RESOLVED = "resolved"
    ESCALATED = "escalated"
    EXPIRED = "expired"


OPEN_ITEM_STATUSES = (ItemStatus.PENDING, ItemStatus.CLAIMED)


class ReviewItem(models.Model):
    queue = models.ForeignKey(
        Queue, on_delete=models.PROTECT, related_name="items", db_index=False
    )  # item_queue_status
    step = models.ForeignKey("core.Step", on_delete=models.CASCADE, related_name="review_items")
    priority = models.IntegerField(default=0)
    # The step's agent is blocked waiting for the decision ("agent waiting"): offered first.
    blocking = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="claimed_items"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="assigned_items"
    )
    reviews_count = models.PositiveSmallIntegerField(default=0)
    due_at = models.DateTimeField(null=True, blank=True)
    escalated_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="escalations"
    )
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The claim query walks this index in order and stops at the first claimable row:
            # blocking items (an agent waits) first, then by priority, then oldest first.
            models.Index(
                fields=["queue", "-blocking", "-priority", "id"],
                name="item_claim_order",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["queue", "status"], name="item_queue_status"),
            models.Index(fields=["lease_expires_at"], name="item_lease_expiry", condition=models.Q(status="claimed")),
        ]

    def __str__(self) -> str:
        return f"item {self.pk} in {self.queue_id}"


class Verdict(models.TextChoices):
    APPROVE = "approve"
    CORRECT = "correct"
    REJECT = "reject"
    ESCALATE = "escalate"


class Review(models.Model):
    # Indexed by review_one_per_reviewer_per_item (item, reviewer) and review_by_reviewer.
    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="reviews", db_index=False)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews", db_index=False
    )
    verdict = models.CharField(max_length=20, choices=Verdict.choices)
    output = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    labels = models.JSONField(default=dict, blank=True)
    comment = models.TextField(blank=True)
    seconds_spent = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    amended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # N reviews means N different reviewers: the database enforces it too.
            models.UniqueConstraint(fields=["item", "reviewer"], name="review_one_per_reviewer_per_item"),
        ]
        indexes = [models.Index(fields=["reviewer", "-created_at"], name="review_by_reviewer")]

    def __str__(self) -> str:
        return f"{self.verdict} by {self.reviewer_id} on item {self.item_id}"


class DecisionMethod(models.TextChoices):
    SINGLE = "single"
    AGREEMENT = "agreement"
    ADJUDICATED = "adjudicated"
    TIMEOUT = "timeout"


class Decision(models.Model):
    """How a reviewed step was finally resolved. Auto-approved steps need no row: their
    decision is their status and their own output."""

    step = models.OneToOneField("core.Step", on_delete=models.CASCADE, related_name="decision")
    item = models.ForeignKey(ReviewItem, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    verdict = models.CharField(max_length=20)  # approved | corrected | rejected | expired
    output = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    method = models.CharField(max_length=20, choices=DecisionMethod.choices)
    decided_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Set when the decision is first frozen into a dataset version; from then on its reviewers
    # can no longer amend it (the exported bytes must stay true to the stored decision).
    exported_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.verdict} ({self.method}) for step {self.step_id}"
