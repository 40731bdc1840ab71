"""Django admin for queues, items, reviews and decisions. State changes go through the services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from reviewqueue.core import audit
from reviewqueue.review.models import Decision, ItemStatus, Queue, Review, ReviewItem


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "reviews_required", "lease_seconds", "sla_seconds", "timeout_action")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("members", "groups")
    raw_id_fields = ("escalation_queue",)


@admin.action(description="Release the selected claimed items back to their queue")
def release_items(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> None:
    from django.db import transaction

    with transaction.atomic():
        rows = list(queryset.select_for_update().filter(status=ItemStatus.CLAIMED).values_list("pk", "claimed_by_id"))
        ReviewItem.objects.filter(pk__in=[pk for pk, _ in rows]).update(
            status=ItemStatus.PENDING, claimed_by=None, claimed_at=None, lease_expires_at=None
        )
        audit.record_many(
            [
                audit.audit_event(
                    "item.released",
                    object_type="reviewitem",
                    object_id=pk,
                    actor=request.user,
                    before={"status": ItemStatus.CLAIMED, "claimed_by": claimed_by},
                    after={"status": ItemStatus.PENDING, "claimed_by": None},
                )
                for pk, claimed_by in rows
            ]
        )
    modeladmin.message_user(request, f"Released {len(rows)} item(s).", messages.SUCCESS)


@admin.register(ReviewItem)
class ReviewItemAdmin(admin.ModelAdmin):
    list_display = ("id", "queue", "status", "priority", "claimed_by", "lease_expires_at", "due_at", "reviews_count")
    list_filter = ("status", "queue")
    raw_id_fields = ("step", "claimed_by", "assigned_to", "escalated_from")
    list_select_related = ("queue", "claimed_by")
    readonly_fields = (
        "status",
        "claimed_by",
        "claimed_at",
        "lease_expires_at",
        "reviews_count",
        "escalated_from",
        "created_at",
        "resolved_at",
    )
    actions = [release_items]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # items come from routing


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ("id", "item", "reviewer", "verdict", "created_at")
    list_filter = ("verdict",)
    raw_id_fields = ("item", "reviewer")
    list_select_related = ("reviewer",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # reviews are records; read-only here


@admin.register(Decision)
class DecisionAdmin(admin.ModelAdmin):
    list_display = ("id", "step", "verdict", "method", "reviewer", "decided_at")
    list_filter = ("verdict", "method")
    raw_id_fields = ("step", "item", "reviewer")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
