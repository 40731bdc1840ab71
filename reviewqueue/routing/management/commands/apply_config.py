"""`manage.py apply_config FILE`: queues and routing rules as code (YAML or JSON), idempotent.

    queues: [{slug, name, instructions, reviews_required, lease_seconds, sla_seconds,
              timeout_action, escalation_queue, members, groups, rubric}]
    rules:  [{name, position, enabled, conditions, sample_rate, action, queue, priority}]

Queues are matched by slug, rules by name. Only the fields a file gives are compared and set;
an entry equal to what is stored is left alone (no new rule version, no audit event). Everything
happens in one transaction: a bad entry changes nothing and the error says which entry it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.exceptions import ValidationError as DRFValidationError

from reviewqueue.review.models import Queue
from reviewqueue.review.queues import queue_state, save_queue
from reviewqueue.review.services import ReviewError
from reviewqueue.routing.models import RoutingRule
from reviewqueue.routing.services import create_rule, update_rule

TOP_LEVEL_KEYS = ("queues", "rules")
_ABSENT = object()


class ConfigError(Exception):
    pass


def load_config(path: Path) -> dict[str, Any]:
    """Parse by extension (.json / .yaml / .yml); anything else is tried as JSON, then YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            try:
                data = json.loads(text)
            except ValueError:
                data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {'JSON' if suffix == '.json' else 'YAML/JSON'}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the file must hold an object with 'queues' and/or 'rules'")
    unknown = sorted(str(key) for key in data if key not in TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"unknown top-level key '{unknown[0]}'; expected queues, rules")
    for key in TOP_LEVEL_KEYS:
        if not isinstance(data.get(key, []), list):
            raise ConfigError(f"'{key}' must be a list")
    return data


def _messages(exc: Exception) -> str:
    """One line from a Django / DRF validation error or a service error."""
    if isinstance(exc, DjangoValidationError) and hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    if isinstance(exc, DjangoValidationError):
        return " ".join(exc.messages)
    if isinstance(exc, DRFValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            return "; ".join(f"{field}: {_flatten(msgs)}" for field, msgs in detail.items())
        return _flatten(detail)
    return str(getattr(exc, "message", None) or exc)


def _flatten(detail: Any) -> str:
    if isinstance(detail, list):
        return " ".join(_flatten(d) for d in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    return str(detail)


# What the services raise for a bad entry: reported with the entry's place in the file.
SERVICE_ERRORS = (DjangoValidationError, DRFValidationError, ValueError, TypeError, ReviewError)


def _same(key: str, given: Any, stored: Any) -> bool:
    if key in ("members", "groups") and isinstance(given, list):
        try:
            return sorted(set(given)) == stored
        except TypeError:
            return False
    return given == stored


def _unchanged(entry: dict[str, Any], state: dict[str, Any]) -> bool:
    return all(key in state and _same(key, value, state[key]) for key, value in entry.items())


class Command(BaseCommand):
    help = "Create or update queues and routing rules from a YAML or JSON file (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--dry-run", action="store_true", help="Report what would change; change nothing.")
        parser.add_argument("--actor", default="", help="Username recorded in the audit trail (default: system).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = load_config(options["file"])
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        actor = None
        if options["actor"]:
            actor = get_user_model().objects.filter(username=options["actor"]).first()
            if actor is None:
                raise CommandError(f"--actor: no user '{options['actor']}'")
        self.counts = {"queue": dict.fromkeys(("created", "updated", "unchanged"), 0)}
        self.counts["rule"] = dict(self.counts["queue"])
        with transaction.atomic():
            self._apply_queues(config.get("queues", []), actor)
            self._apply_rules(config.get("rules", []), actor)
            if options["dry_run"]:
                transaction.set_rollback(True)
        summary = "; ".join(
            f"{kind}s: " + ", ".join(f"{n} {what}" for what, n in counts.items())
            for kind, counts in self.counts.items()
        )
        self.stdout.write(("dry run, nothing saved: " if options["dry_run"] else "") + summary)

    def _report(self, kind: str, key: str, what: str) -> None:
        self.counts[kind][what] += 1
        self.stdout.write(f"{kind} {key}: {what}")

    def _apply_queues(self, entries: list[Any], actor: Any) -> None:
        slugs: set[str] = set()
        deferred: list[tuple[str, dict[str, Any], Queue]] = []
        # Pass 1: every queue, without an escalation queue that does not exist yet (it may come later
        # in the file). Pass 2: those escalation queues.
        for index, entry in enumerate(entries):
            where = f"queues[{index}]"
            if not isinstance(entry, dict):
                raise CommandError(f"{where}: must be an object with at least 'slug'")
            slug = entry.get("slug")
            if not isinstance(slug, str) or not slug:
                raise CommandError(f"{where}: slug: required")
            where = f"{where} ({slug})"
            if slug in slugs:
                raise CommandError(f"{where}: slug: appears twice in the file")
            slugs.add(slug)
            data = dict(entry)
            escalation = data.get("escalation_queue", _ABSENT)
            later = (
                isinstance(escalation, str)
                and escalation != slug
                and not Queue.objects.filter(slug=escalation).exists()
                and any(isinstance(e, dict) and e.get("slug") == escalation for e in entries[index + 1 :])
            )
            if later:
                del data["escalation_queue"]
            queue = Queue.objects.filter(slug=slug).first()
            try:
                if queue is None:
                    queue = save_queue(data=data, actor=actor)
                    self._report("queue", slug, "created")
                elif _unchanged(data, queue_state(queue)) and not later:
                    self._report("queue", slug, "unchanged")
                    continue
                elif _unchanged(data, queue_state(queue)):
                    pass  # only its escalation queue may change, in pass 2
                else:
                    queue = save_queue(data=data, actor=actor, queue=queue)
                    self._report("queue", slug, "updated")
            except SERVICE_ERRORS as exc:
                raise CommandError(f"{where}: {_messages(exc)}") from None
            if later:
                deferred.append((where, entry, queue))
        for where, entry, queue in deferred:
            queue.refresh_from_db()
            state = queue_state(queue)
            if state["escalation_queue"] == entry["escalation_queue"]:
                continue
            try:
                save_queue(data=dict(entry), actor=actor, queue=queue)
            except SERVICE_ERRORS as exc:
                raise CommandError(f"{where}: {_messages(exc)}") from None

    def _apply_rules(self, entries: list[Any], actor: Any) -> None:
        names: set[str] = set()
        for index, entry in enumerate(entries):
            where = f"rules[{index}]"
            if not isinstance(entry, dict):
                raise CommandError(f"{where}: must be an object with at least 'name'")
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip():
                raise CommandError(f"{where}: name: required")
            where = f"{where} ({name})"
            if name in names:
                raise CommandError(f"{where}: name: appears twice in the file")
            names.add(name)
            rule = RoutingRule.objects.filter(name=name.strip()).first()
            try:
                if rule is None:
                    create_rule(data=entry, actor=actor)
                    self._report("rule", name, "created")
                else:
                    version = rule.version
                    rule = update_rule(rule=rule, data=entry, actor=actor)
                    self._report("rule", name, "updated" if rule.version != version else "unchanged")
            except DjangoValidationError as exc:
                raise CommandError(f"{where}: {_messages(exc)}") from None
