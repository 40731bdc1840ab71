"""Agents, their keys, and what they send: traces, steps and image attachments."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from reviewqueue.core.fields import WholeJSONField


class Agent(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    # The OTLP span attribute that carries the agent's confidence (OTLP.md).
    confidence_attribute = models.CharField(max_length=200, default="reviewqueue.confidence")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


KEY_PREFIX = "rq_"


def hash_api_key(raw_key: str) -> str:
    """API keys are 256-bit random strings, so a plain SHA-256 is a safe, fast lookup hash."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKey(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True, help_text="First characters, shown to identify the key.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.agent})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def issue(cls, agent: Agent, name: str = "") -> tuple[ApiKey, str]:
        """Create a key and return it with the raw secret, which is never stored or shown again."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(agent=agent, name=name, prefix=raw[:10], key_hash=hash_api_key(raw))
        return key, raw


class Trace(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="traces")
    external_id = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "external_id"], name="trace_unique_external_id_per_agent")
        ]

    def __str__(self) -> str:
        return self.external_id


class StepKind(models.TextChoices):
    LLM = "llm"
    TOOL_CALL = "tool_call"
    FINAL_ANSWER = "final_answer"
    RETRIEVAL = "retrieval"
    OTHER = "other"


class StepStatus(models.TextChoices):
    PENDING_REVIEW = "pending_review"
    AUTO_APPROVED = "auto_approved"
    APPROVED = "approved"
    CORRECTED = "corrected"
    REJECTED = "rejected"
    EXPIRED = "expired"


DECIDED_STATUSES = (StepStatus.APPROVED, StepStatus.CORRECTED, StepStatus.REJECTED, StepStatus.EXPIRED)


class Step(models.Model):
    """One action of an agent. `input`/`output` are stored in our own form (docs/steps.md):
    input is a list of OpenAI-style messages or {"messages": [...], "tools": [...]}; output is
    an assistant message ({"role", "content", "tool_calls"}), a string, or any JSON value."""

    # No single-column indexes on agent and trace: step_unique_external_id_per_agent /
    # step_agent_status and step_trace lead with them (one index less to keep up per insert).
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="steps", db_index=False)
    trace = models.ForeignKey(
        Trace, on_delete=models.CASCADE, null=True, blank=True, related_name="steps", db_index=False
    )
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children")
    external_id = models.CharField(max_length=200)
    parent_external_id = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=20, choices=StepKind.choices, default=StepKind.OTHER)
    name = models.CharField(max_length=200, blank=True)
    # Stored as PostgreSQL `json`: read whole, never queried inside (see WholeJSONField).
    input = WholeJSONField(null=True, blank=True)
    output = WholeJSONField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    blocking = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.AUTO_APPROVED)
    # Why the step went where it went: the rule, its version, and the values that matched.
    rule = models.ForeignKey(
        "routing.RoutingRule", on_delete=models.SET_NULL, null=True, blank=True, related_name="steps"
    )
    rule_name = models.CharField(max_length=100, blank=True)
    rule_version = models.PositiveIntegerField(null=True, blank=True)
    route_reason = models.JSONField(default=dict, blank=True)
    spot_check = models.BooleanField(default=False, help_text="Auto-approved, but sampled for a spot check.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "external_id"], name="step_unique_external_id_per_agent"),
            models.CheckConstraint(
                condition=models.Q(confidence__isnull=True) | models.Q(confidence__gte=0, confidence__lte=1),
                name="step_confidence_in_unit_interval",
            ),
        ]
        indexes = [
            models.Index(fields=["agent", "status", "id"], name="step_agent_status"),
            models.Index(fields=["trace", "id"], name="step_trace"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name or self.external_id}"


def attachment_path(instance: Attachment, filename: str) -> str:
    return f"attachments/{instance.sha256[:2]}/{filename}"


class Attachment(models.Model):
    """An image, re-encoded by Pillow (EXIF and everything else dropped) with a thumbnail."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="attachments")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=50)
    image = models.FileField(upload_to=attachment_path)
    thumbnail = models.FileField(upload_to=attachment_path)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.filename


class AuditEvent(models.Model):
    """Append-only: every state change and every configuration change."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_agent = models.ForeignKey(Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    actor_label = models.CharField(max_length=150, blank=True, help_text="'system' for the sweeper and tasks.")
    action = models.CharField(max_length=60, db_index=True)
    object_type = models.CharField(max_length=60)
    object_id = models.CharField(max_length=64)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id}"
