"""Datasets of reviewed steps: saved filters, frozen versions of eval cases, and export jobs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class Dataset(models.Model):
    """A saved filter over decided steps, with its split ratio and redaction settings.

    `filters` keys (all optional): agents, queues, kinds, verdicts (lists of names), labels
    ({rubric label: value}), tags (list; steps whose metadata.tags holds all of them), since,
    until (ISO dates), include_auto_approved (bool)."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    filters = models.JSONField(default=dict, blank=True)
    test_ratio = models.FloatField(default=0.1, help_text="Fraction of steps in the test split (stable per step).")
    redact = models.BooleanField(default=True, help_text="Redact emails, phones, card numbers and API keys.")
    # Extra patterns: [{"name": "customer_id", "pattern": "CUST-[0-9]{6}"}]
    redaction_patterns = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(test_ratio__gte=0, test_ratio__lte=1), name="dataset_test_ratio_0_to_1"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def filter_summary(self) -> str:
        """The filter in words, for pages: "verdicts: corrected · since: 2026-11-01"."""
        return describe_filters(self.filters)


def describe_filters(filters: dict[str, Any]) -> str:
    parts = []
    for key, value in filters.items():
        if key == "include_auto_approved":
            parts.append("auto-approved steps included" if value else "")
        elif key == "labels" and isinstance(value, dict):
            parts.append("labels: " + ", ".join(f"{name} = {answer}" for name, answer in value.items()))
        elif isinstance(value, list):
            parts.append(f"{key}: {', '.join(map(str, value))}")
        else:
            parts.append(f"{key}: {value}")
    return " · ".join(part for part in parts if part) or "every decided step"


class VersionStatus(models.TextChoices):
    FREEZING = "freezing"  # its cases are being copied (a django-q2 task); not exportable yet
    READY = "ready"
    FAILED = "failed"


class DatasetVersion(models.Model):
    """An immutable snapshot: the cases the dataset's filter chose when it was frozen. Freezing
    runs as a django-q2 task: a version is `freezing` until its cases are all stored."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    filters = models.JSONField(default=dict, help_text="The dataset's filter as it was when frozen.")
    test_ratio = models.FloatField()
    content_hash = models.CharField(max_length=64, help_text="SHA-256 over the cases' content hashes, in order.")
    case_count = models.PositiveIntegerField(default=0)
    duplicates_removed = models.PositiveIntegerField(default=0)
    # {"verdict": {"approved": n, ...}, "kind": {...}, "split": {"train": n, "test": n}}
    counts = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=10, choices=VersionStatus.choices, default=VersionStatus.READY)
    cases_done = models.PositiveIntegerField(default=0, help_text="Steps read so far while freezing.")
    cases_total = models.PositiveIntegerField(null=True, blank=True, help_text="Steps to read (known at start).")
    error = models.TextField(blank=True)
    frozen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [models.UniqueConstraint(fields=["dataset", "number"], name="dataset_version_unique_number")]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"

    @property
    def progress(self) -> float:
        if self.status == VersionStatus.READY:
            return 1.0
        if not self.cases_total:
            return 0.0
        return min(1.0, self.cases_done / self.cases_total)


class Split(models.TextChoices):
    TRAIN = "train"
    TEST = "test"


class EvalCase(models.Model):
    """One decided step as frozen into a version: the context, the expected output (the
    approved output or the correction), the rejected output where there is one, and the review."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="cases")
    position = models.PositiveIntegerField()
    step = models.ForeignKey("core.Step", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    step_ref = models.BigIntegerField(help_text="The step id, kept if the step is deleted.")
    item_ref = models.BigIntegerField(null=True, blank=True)
    agent = models.CharField(max_length=100)
    queue = models.CharField(max_length=60, blank=True)
    kind = models.CharField(max_length=20)
    name = models.CharField(max_length=200, blank=True)
    messages = models.JSONField(default=list)
    tools = models.JSONField(null=True, blank=True)
    expected = models.JSONField(null=True, blank=True)
    rejected = models.JSONField(null=True, blank=True)
    verdict = models.CharField(max_length=20)
    auto = models.BooleanField(default=False, help_text="Not decided by a human (auto-approved or SLA timeout).")
    reason = models.TextField(blank=True)
    labels = models.JSONField(default=dict, blank=True)
    reviewers = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    attachments = models.JSONField(default=list, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    split = models.CharField(max_length=5, choices=Split.choices)
    content_hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "content_hash"], name="evalcase_unique_content_per_version"),
        ]
        indexes = [models.Index(fields=["version", "position"], name="evalcase_version_order")]

    def __str__(self) -> str:
        return f"case {self.position} of {self.version_id} (step {self.step_ref})"


class ExportStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Export(models.Model):
    """A file written in one format from a version or an ad-hoc filter, by a django-q2 task."""

    format = models.CharField(max_length=20)
    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, null=True, blank=True, related_name="exports")
    filters = models.JSONField(default=dict, blank=True)
    split = models.CharField(max_length=5, default="all")
    status = models.CharField(max_length=10, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    rows_total = models.PositiveIntegerField(null=True, blank=True, help_text="Cases to read (known at start).")
    rows_done = models.PositiveIntegerField(default=0, help_text="Cases read so far.")
    rows = models.PositiveIntegerField(default=0, help_text="Records written.")
    file = models.CharField(max_length=500, blank=True, help_text="Path under EXPORT_ROOT.")
    manifest = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["version", "format", "split", "status"], name="export_reuse")]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.format}, {self.status})"

    @property
    def progress(self) -> float:
        if self.status == ExportStatus.DONE:
            return 1.0
        if not self.rows_total:
            return 0.0
        return min(1.0, self.rows_done / self.rows_total)
