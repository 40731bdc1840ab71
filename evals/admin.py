"""Read-mostly admin for datasets, their frozen versions and export jobs (the Datasets page and
the API are where they are made)."""

from __future__ import annotations

from django.contrib import admin

from evals.models import Dataset, DatasetVersion, Export


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "test_ratio", "redact", "created_at")
    search_fields = ("name", "description")


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ("dataset", "number", "status", "case_count", "duplicates_removed", "created_at", "frozen_at")
    list_filter = ("dataset", "status")
    readonly_fields = [f.name for f in DatasetVersion._meta.fields]

    def has_add_permission(self, request) -> bool:  # versions are made by freezing
        return False


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    list_display = ("id", "format", "version", "split", "status", "rows", "created_at", "finished_at")
    list_filter = ("status", "format")
    readonly_fields = [f.name for f in Export._meta.fields]

    def has_add_permission(self, request) -> bool:  # exports are started from the page, API or CLI
        return False
