"""`manage.py create_api_key --agent NAME [--name LABEL]`: the raw key is alone on the last line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from reviewqueue.core import audit
from reviewqueue.core.models import Agent, ApiKey


class Command(BaseCommand):
    help = "Create an API key for an agent (the agent is created if needed). The key is shown once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", required=True, help="Agent name.")
        parser.add_argument("--name", default="", help="A label for the key, e.g. 'prod'.")
        parser.add_argument("--description", default="", help="Description, when the agent is new.")

    def handle(self, *args: Any, **options: Any) -> None:
        agent_name = options["agent"].strip()
        if not agent_name or len(agent_name) > 100:
            raise CommandError("--agent must be a non-empty name of at most 100 characters")
        with transaction.atomic():
            agent, created = Agent.objects.get_or_create(
                name=agent_name, defaults={"description": options["description"]}
            )
            key, raw = ApiKey.issue(agent, name=options["name"][:100])
            audit.record(
                "api_key.created",
                key,
                object_type="apikey",
                after={"agent": agent.name, "prefix": key.prefix, "name": key.name},
            )
        self.stdout.write(f"{'Created' if created else 'Using'} agent {agent.name!r} (id {agent.pk}).")
        self.stdout.write(f"API key {key.prefix}… created. It is shown once, below; store it now.")
        self.stdout.write("Send it as: Authorization: Bearer <key>")
        self.stdout.write(raw)
