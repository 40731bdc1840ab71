"""The Datasets page's filter builder: form fields in, a dataset filter (selectors.clean_filters) out."""

from __future__ import annotations

from typing import Any

from django import forms

from evals.formats import NAMES
from evals.redaction import pattern_problem
from evals.selectors import VERDICT_CHOICES
from reviewqueue.core.models import StepKind
from reviewqueue.review.models import Queue


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class DatasetFilterForm(forms.Form):
    name = forms.SlugField(required=False, max_length=100, help_text="Needed to save the filter as a dataset.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    agents = forms.CharField(required=False, help_text="Agent names, comma-separated.")
    queues = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    kinds = forms.MultipleChoiceField(
        required=False, choices=[(k, k) for k in StepKind.values], widget=forms.CheckboxSelectMultiple
    )
    verdicts = forms.MultipleChoiceField(
        required=False, choices=[(v, v) for v in VERDICT_CHOICES], widget=forms.CheckboxSelectMultiple
    )
    label_name = forms.CharField(required=False, max_length=60, label="Rubric label")
    label_value = forms.CharField(required=False, max_length=200, label="equals")
    tags = forms.CharField(required=False, help_text="Tags from step metadata, comma-separated (all must match).")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    include_auto_approved = forms.BooleanField(required=False, label="Include auto-approved steps")
    test_ratio = forms.FloatField(min_value=0, max_value=1, initial=0.1, required=False, label="Test split ratio")
    preview_format = forms.ChoiceField(choices=[(n, n) for n in NAMES], initial="openai-sft", required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["queues"].choices = [(q.slug, q.name) for q in Queue.objects.order_by("name")]

    def filters(self) -> dict[str, Any]:
        """The raw filter for selectors.clean_filters (call after is_valid())."""
        data = self.cleaned_data
        filters: dict[str, Any] = {
            "agents": _names(data.get("agents") or ""),
            "queues": data.get("queues") or [],
            "kinds": data.get("kinds") or [],
            "verdicts": data.get("verdicts") or [],
            "tags": _names(data.get("tags") or ""),
            "since": data["since"].isoformat() if data.get("since") else None,
            "until": data["until"].isoformat() if data.get("until") else None,
            "include_auto_approved": bool(data.get("include_auto_approved")),
        }
        if data.get("label_name"):
            filters["labels"] = {data["label_name"]: data.get("label_value") or ""}
        return filters


class RedactionForm(forms.Form):
    """A dataset's redaction settings: on or off, and extra patterns written one a line as
    `name: regular expression` (the name is the placeholder's: `[CUSTOMER_ID]`)."""

    redact = forms.BooleanField(required=False, label="Redact emails, phone and card numbers, and API keys")
    patterns = forms.CharField(
        required=False,
        label="Extra patterns",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text=(
            "One a line: name: regular expression (customer_id: CUST-[0-9]{6}). Exports made from now on use them."
        ),
    )

    @classmethod
    def for_dataset(cls, dataset: Any) -> RedactionForm:
        lines = "\n".join(f"{entry['name']}: {entry['pattern']}" for entry in dataset.redaction_patterns)
        return cls(initial={"redact": dataset.redact, "patterns": lines})

    def clean_patterns(self) -> list[dict[str, str]]:
        entries = []
        for number, line in enumerate(self.cleaned_data["patterns"].splitlines(), start=1):
            if not line.strip():
                continue
            name, colon, pattern = line.partition(":")
            if not colon or not name.strip() or not pattern.strip():
                raise forms.ValidationError(f"line {number}: write it as name: regular expression")
            entry = {"name": name.strip(), "pattern": pattern.strip()}
            problem = pattern_problem(entry["name"], entry["pattern"])
            if problem:
                raise forms.ValidationError(f"line {number}: {problem}")
            entries.append(entry)
        return entries
