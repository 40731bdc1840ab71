"""`manage.py ensure_schedules`: create or update the django-q2 schedules (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from reviewqueue.tasks import ensure_schedules


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules (lease sweep and SLA timeouts)."

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ensure_schedules():
            self.stdout.write(f"schedule {name}: ok")
