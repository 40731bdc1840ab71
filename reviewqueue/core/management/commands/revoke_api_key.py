"""`manage.py revoke_api_key PREFIX`: revoke the key whose visible prefix is PREFIX."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from reviewqueue.core import audit
from reviewqueue.core.models import ApiKey


class Command(BaseCommand):
    help = "Revoke an API key by its prefix (as shown by create_api_key and the admin)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="The key's prefix, e.g. rq_AbCdEfG (a full key works too).")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = options["prefix"].strip().rstrip("…")
        if len(prefix) < 6:
            raise CommandError("give at least the first 6 characters of the key")
        with transaction.atomic():
            keys = list(ApiKey.objects.select_for_update().select_related("agent").filter(prefix=prefix[:10]))
            if len(prefix) < 10:
                keys = list(
                    ApiKey.objects.select_for_update().select_related("agent").filter(prefix__startswith=prefix)
                )
            if not keys:
                raise CommandError(f"no API key with prefix {prefix!r}")
            if len(keys) > 1:
                raise CommandError(f"{len(keys)} keys match {prefix!r}; give more characters")
            key = keys[0]
            if key.revoked_at is not None:
                self.stdout.write(f"API key {key.prefix}… of agent {key.agent.name!r} was already revoked.")
                return
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            audit.record(
                "api_key.revoked",
                key,
                object_type="apikey",
                before={"revoked_at": None},
                after={"revoked_at": key.revoked_at.isoformat(), "prefix": key.prefix, "agent": key.agent.name},
            )
        self.stdout.write(f"Revoked API key {key.prefix}… of agent {key.agent.name!r}.")
