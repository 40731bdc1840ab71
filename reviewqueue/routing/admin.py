"""Django admin for routing rules. Saves go through the routing services, so an edit made here is
validated, versioned and audited exactly like one made through the API."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from reviewqueue.routing.models import RoutingRule, RoutingRuleVersion
from reviewqueue.routing.services import RULE_FIELDS, clean_rule_data, create_rule, delete_rule, update_rule


def _service_data(cleaned_data: dict[str, Any]) -> dict[str, Any]:
    data = {key: cleaned_data[key] for key in RULE_FIELDS if key in cleaned_data}
    if "queue" in data:
        data["queue"] = data["queue"].slug if data["queue"] is not None else None
    return data


class RoutingRuleForm(forms.ModelForm):
    class Meta:
        model = RoutingRule
        fields = list(RULE_FIELDS)

    def clean(self) -> dict[str, Any]:
        cleaned_data = super().clean()
        if not self.errors:
            try:
                clean_rule_data(_service_data(cleaned_data), rule=self.instance if self.instance.pk else None)
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    self.add_error(field if field in self.fields else None, messages)
        return cleaned_data


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    form = RoutingRuleForm
    list_display = ("name", "position", "enabled", "action", "queue", "priority", "sample_rate", "version")
    list_filter = ("enabled", "action", "queue")
    search_fields = ("name",)
    ordering = ("position", "id")
    readonly_fields = ("version", "created_at", "updated_at")
    fields = (*RULE_FIELDS, "version", "created_at", "updated_at")

    def save_model(self, request: HttpRequest, obj: RoutingRule, form: Any, change: bool) -> None:
        data = _service_data(form.cleaned_data)
        if change:
            saved = update_rule(rule=RoutingRule.objects.get(pk=obj.pk), data=data, actor=request.user)
        else:
            saved = create_rule(data=data, actor=request.user)
        obj.pk, obj.version = saved.pk, saved.version

    def delete_model(self, request: HttpRequest, obj: RoutingRule) -> None:
        delete_rule(rule=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for rule in queryset:
            delete_rule(rule=rule, actor=request.user)


@admin.register(RoutingRuleVersion)
class RoutingRuleVersionAdmin(admin.ModelAdmin):
    list_display = ("rule_name", "version", "changed_by", "created_at")
    list_filter = ("rule_name",)
    readonly_fields = ("rule", "rule_name", "version", "snapshot", "changed_by", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
