"""Forms of the reviewer's screens: a verdict, an amendment, and the rubric answers in them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import QueryDict

VERDICT_CHOICES = [(v, v) for v in ("approve", "correct", "reject", "escalate", "skip")]
AMEND_CHOICES = [("approve", "Approve"), ("correct", "Correct"), ("reject", "Reject")]


class VerdictForm(forms.Form):
    verdict = forms.ChoiceField(choices=VERDICT_CHOICES)
    output = forms.CharField(required=False, strip=False)
    reason = forms.CharField(required=False)
    comment = forms.CharField(required=False)
    shown_at = forms.FloatField(required=False)


class AmendForm(forms.Form):
    verdict = forms.ChoiceField(choices=AMEND_CHOICES, widget=forms.RadioSelect)
    output = forms.CharField(required=False, strip=False)
    reason = forms.CharField(required=False)
    comment = forms.CharField(required=False)


class HistorySearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=200)
    verdict = forms.ChoiceField(
        required=False,
        choices=[("", "All verdicts"), *((v, v.title()) for v in ("approve", "correct", "reject", "escalate"))],
    )


def label_field_name(index: int) -> str:
    return f"label-{index}"


def rubric_fields(rubric: list[dict[str, Any]], values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The rubric entries with their form field names, current values and, for ratings, the scale."""
    values = values or {}
    fields = []
    for index, entry in enumerate(rubric or []):
        field = {**entry, "field": label_field_name(index), "value": values.get(entry.get("name"))}
        if entry.get("type") == "rating":
            low, high = entry.get("min", 1), entry.get("max", 5)
            field["scale"] = list(range(int(low), int(high) + 1)) if high - low <= 10 else []
            field["min"], field["max"] = low, high
        fields.append(field)
    return fields


def labels_from_post(rubric: list[dict[str, Any]], data: QueryDict) -> dict[str, Any]:
    """Rubric answers as the services expect them (validated there): ratings as numbers when they
    are numbers (otherwise passed on as text, which the service refuses by name)."""
    labels: dict[str, Any] = {}
    for index, entry in enumerate(rubric or []):
        name = label_field_name(index)
        kind = entry.get("type")
        if kind == "multi_choice":
            chosen = data.getlist(name)
            if chosen:
                labels[entry["name"]] = chosen
            continue
        value = data.get(name, "")
        if value == "":
            continue
        if kind == "rating":
            try:
                number = float(value)
                labels[entry["name"]] = int(number) if number.is_integer() else number
            except ValueError:
                labels[entry["name"]] = value
        else:
            labels[entry["name"]] = value
    return labels
