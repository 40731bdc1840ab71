"""Routing rules: ordered, versioned, first enabled match wins."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class RuleAction(models.TextChoices):
    ROUTE = "route"
    AUTO_APPROVE = "auto_approve"


class RoutingRule(models.Model):
    name = models.CharField(max_length=100, unique=True)
    position = models.IntegerField(default=0, db_index=True)
    enabled = models.BooleanField(default=True)
    # A list of {"field", "op", "value"}; all must hold. See routing/conditions.py.
    conditions = models.JSONField(default=list, blank=True)
    sample_rate = models.FloatField(default=1.0)
    action = models.CharField(max_length=20, choices=RuleAction.choices, default=RuleAction.ROUTE)
    queue = models.ForeignKey("review.Queue", on_delete=models.PROTECT, null=True, blank=True, related_name="rules")
    priority = models.IntegerField(default=0)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(sample_rate__gte=0, sample_rate__lte=1), name="rule_sample_rate_in_unit_interval"
            ),
            models.CheckConstraint(
                condition=~models.Q(action="route") | models.Q(queue__isnull=False), name="rule_route_needs_queue"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class RoutingRuleVersion(models.Model):
    """Every saved state of a rule, kept even after the rule is deleted."""

    rule = models.ForeignKey(RoutingRule, on_delete=models.SET_NULL, null=True, related_name="versions")
    rule_name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    snapshot = models.JSONField()
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["rule_name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "version"], name="rule_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_name} v{self.version}"
