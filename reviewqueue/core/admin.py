"""Admin for agents, keys, traces, steps, attachments and the (read-only) audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from reviewqueue.core.models import Agent, ApiKey, Attachment, AuditEvent, Step, Trace


class ApiKeyInline(admin.TabularInline):
    """Keys are issued with `manage.py create_api_key` (the raw key is shown once, there)."""

    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("prefix", "name", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "description", "created_at")
    search_fields = ("name",)
    inlines = [ApiKeyInline]


@admin.register(Trace)
class TraceAdmin(admin.ModelAdmin):
    list_display = ("external_id", "agent", "created_at")
    list_filter = ("agent",)
    search_fields = ("external_id",)
    raw_id_fields = ("agent",)


class AttachmentInline(admin.TabularInline):
    model = Attachment
    extra = 0
    fields = ("filename", "content_type", "width", "height", "size_bytes", "sha256")
    readonly_fields = fields


@admin.register(Step)
class StepAdmin(admin.ModelAdmin):
    list_display = ("id", "external_id", "agent", "kind", "name", "confidence", "status", "rule_name", "created_at")
    list_filter = ("status", "kind", "agent", "spot_check")
    search_fields = ("external_id", "name")
    raw_id_fields = ("agent", "trace", "parent", "rule")
    list_select_related = ("agent",)
    date_hierarchy = "created_at"
    inlines = [AttachmentInline]


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = ("id", "filename", "content_type", "width", "height", "size_bytes", "step")
    search_fields = ("filename", "sha256")
    raw_id_fields = ("step",)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Append-only: viewable, never added, changed or deleted here."""

    list_display = ("created_at", "action", "actor_label", "object_type", "object_id")
    list_filter = ("action", "object_type")
    search_fields = ("object_id", "actor_label", "action")
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
