"""Routing: decide where a step goes, and create / edit / delete rules (versioned and audited)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from reviewqueue.core import rows
from reviewqueue.core.audit import record
from reviewqueue.review.models import Queue
from reviewqueue.routing.conditions import ConditionError, evaluate, sample_hit, validate_conditions
from reviewqueue.routing.models import RoutingRule, RoutingRuleVersion, RuleAction

RULE_FIELDS = ("name", "position", "enabled", "conditions", "sample_rate", "action", "queue", "priority")


@dataclass(frozen=True)
class RouteDecision:
    action: str  # "route" | "auto_approve"
    queue: Queue | None  # for "route"
    rule: RoutingRule | None  # None: no rule matched (the default, auto-approve)
    rule_version: int | None
    priority: int
    reason: dict[str, Any] = field(default_factory=dict)


# (signature, rules): the last rules loaded by this process, reused while the signature holds.
_rules_cache: tuple[str, list[RoutingRule]] | None = None


def load_rules() -> list[RoutingRule]:
    """The enabled rules in the order they are tried, with their queues. Treat as read-only.

    Ingest asks for them on every request, so each process keeps the last rules it loaded and
    reuses them while `rules_signature()` is unchanged (one cheap query instead of loading and
    building the rules and their queues). Every app process checks for itself, so an edit made
    anywhere (API, admin, apply_config, a plain `.save()` or `.update()`, raw SQL) is seen by
    the next request of every process."""
    global _rules_cache
    signature = rules_signature()
    cached = _rules_cache
    if signature is not None and cached is not None and cached[0] == signature:
        return cached[1]
    rules = list(RoutingRule.objects.filter(enabled=True).select_related("queue").order_by("position", "id"))
    # Loaded after the signature was read: at worst these rules are newer than the signature, and
    # the next call then sees a new signature and loads again; never older rules under a new one.
    _rules_cache = (signature, rules) if signature is not None else None
    return rules


def rules_signature() -> str | None:
    """A value that changes whenever any rule or a rule's queue changes (rows added, edited or
    deleted, committed or not), or None where there is no cheap one (then rules are not cached).

    PostgreSQL: each row's `xmin`, the id of the transaction that wrote that row version. Every
    write makes a new row version, transaction ids are never reused (within wraparound), and
    a rolled-back write's id never comes back, so an equal signature means the same rows.
    SQLite (development and tests) has no such column: rules are loaded each time there."""
    if connection.vendor != "postgresql":
        return None
    rules, queues = (connection.ops.quote_name(m._meta.db_table) for m in (RoutingRule, Queue))
    with rows.cursor() as cursor:  # on every ingest request: prepared once per connection
        cursor.execute(
            "SELECT coalesce(string_agg(concat(r.id, '.', r.xmin, '.', q.xmin), ',' ORDER BY r.id), '') "
            f"FROM {rules} r LEFT JOIN {queues} q ON q.id = r.queue_id"
        )
        return cursor.fetchone()[0]


def route_step(facts: Mapping[str, Any], *, rules: list[RoutingRule], sample_key: str) -> RouteDecision:
    """The first enabled rule whose conditions hold and whose sample admits the step decides.

    A rule with ``sample_rate`` below 1 applies to that deterministic fraction of the steps it
    matches (by ``sample_key``, f"{agent_id}:{external_id}"); the rest fall through to the next rule."""
    for rule in rules:
        if not rule.enabled:
            continue
        matched = evaluate(rule.conditions, facts)
        if matched is None:
            continue
        if rule.sample_rate < 1 and not sample_hit(rule.sample_rate, sample_key):
            continue
        return RouteDecision(
            action=rule.action,
            queue=rule.queue if rule.action == RuleAction.ROUTE else None,
            rule=rule,
            rule_version=rule.version,
            priority=rule.priority,
            reason={"rule": rule.name, "version": rule.version, "matched": matched, "sampled": rule.sample_rate},
        )
    return RouteDecision(
        action=RuleAction.AUTO_APPROVE,
        queue=None,
        rule=None,
        rule_version=None,
        priority=0,
        reason={"rule": None, "version": None, "matched": {}, "default": "auto_approve"},
    )


# --- editing rules -----------------------------------------------------------------------------


def rule_snapshot(rule: RoutingRule) -> dict[str, Any]:
    """A rule as the API shows it (queue by slug); kept in versions and audit events."""
    return {
        "name": rule.name,
        "position": rule.position,
        "enabled": rule.enabled,
        "conditions": rule.conditions,
        "sample_rate": rule.sample_rate,
        "action": rule.action,
        "queue": rule.queue.slug if rule.queue_id else None,
        "priority": rule.priority,
        "version": rule.version,
    }


def _error(errors: dict[str, list[str]], key: str, message: str) -> None:
    errors.setdefault(key, []).append(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def clean_rule_data(data: Mapping[str, Any], *, rule: RoutingRule | None) -> dict[str, Any]:
    """Validate ``data`` (all fields for a new rule, any subset for an edit) against the rule's
    current state; return the cleaned changes, or raise ValidationError({field: [messages]})."""
    if not isinstance(data, Mapping):
        raise ValidationError({"non_field_errors": ["expected an object with the rule's fields"]})
    errors: dict[str, list[str]] = {}
    for key in data:
        if key not in RULE_FIELDS:
            _error(errors, str(key), f"unknown field; expected one of {', '.join(RULE_FIELDS)}")
    cleaned: dict[str, Any] = {}

    if "name" in data or rule is None:
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            _error(errors, "name", "required; a non-empty string")
        elif len(name.strip()) > 100:
            _error(errors, "name", "at most 100 characters")
        else:
            name = name.strip()
            taken = RoutingRule.objects.filter(name=name)
            if rule is not None:
                taken = taken.exclude(pk=rule.pk)
            if taken.exists():
                _error(errors, "name", f"a rule named '{name}' already exists")
            cleaned["name"] = name
    for key in ("position", "priority"):
        if key in data:
            if not _is_int(data[key]) or not -(2**31) <= data[key] < 2**31:
                _error(errors, key, "must be an integer")
            else:
                cleaned[key] = data[key]
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            _error(errors, "enabled", "must be true or false")
        else:
            cleaned["enabled"] = data["enabled"]
    if "conditions" in data:
        try:
            cleaned["conditions"] = validate_conditions(data["conditions"])
        except ConditionError as exc:
            _error(errors, "conditions", str(exc))
    if "sample_rate" in data:
        rate = data["sample_rate"]
        if not (_is_int(rate) or isinstance(rate, float)) or not (math.isfinite(rate) and 0 <= rate <= 1):
            _error(errors, "sample_rate", "must be a number between 0 and 1")
        else:
            cleaned["sample_rate"] = float(rate)
    if "action" in data:
        if data["action"] not in RuleAction.values:
            _error(errors, "action", f"must be one of {', '.join(RuleAction.values)}")
        else:
            cleaned["action"] = data["action"]
    if "queue" in data:
        slug = data["queue"]
        if slug is None or slug == "":
            cleaned["queue"] = None
        elif not isinstance(slug, str):
            _error(errors, "queue", "must be a queue slug")
        else:
            queue = Queue.objects.filter(slug=slug).first()
            if queue is None:
                _error(errors, "queue", f"no queue with slug '{slug}'")
            else:
                cleaned["queue"] = queue

    if not errors:
        action = cleaned.get("action", rule.action if rule is not None else RuleAction.ROUTE)
        queue = cleaned.get("queue", rule.queue if rule is not None else None)
        if action == RuleAction.ROUTE and queue is None:
            _error(errors, "queue", "required when action is 'route'")
        elif action == RuleAction.AUTO_APPROVE and queue is not None:
            if "queue" in cleaned:
                _error(errors, "queue", "must be empty when action is 'auto_approve'")
            else:
                cleaned["queue"] = None  # switching a rule to auto-approve lets go of its queue
    if errors:
        raise ValidationError(errors)
    return cleaned


def _save_version(rule: RoutingRule, actor: Any) -> None:
    RoutingRuleVersion.objects.create(
        rule=rule,
        rule_name=rule.name,
        version=rule.version,
        snapshot=rule_snapshot(rule),
        changed_by=actor if getattr(actor, "is_authenticated", False) else None,
    )


def create_rule(*, data: Mapping[str, Any], actor: Any) -> RoutingRule:
    """A new rule at version 1, with its first RoutingRuleVersion and an audit event."""
    cleaned = clean_rule_data(data, rule=None)
    with transaction.atomic():
        now = timezone.now()
        rule = RoutingRule.objects.create(**cleaned, version=1, created_at=now, updated_at=now)
        _save_version(rule, actor)
        record("rule.created", rule, actor=actor, after=rule_snapshot(rule))
    return rule


def update_rule(*, rule: RoutingRule, data: Mapping[str, Any], actor: Any) -> RoutingRule:
    """Apply the given fields. A real change bumps the version, keeps a snapshot and is audited;
    fields equal to what is stored change nothing (no new version)."""
    cleaned = clean_rule_data(data, rule=rule)
    with transaction.atomic():
        rule = RoutingRule.objects.select_for_update(of=("self",)).select_related("queue").get(pk=rule.pk)
        before = rule_snapshot(rule)
        for key, value in cleaned.items():
            setattr(rule, key, value)
        after = rule_snapshot(rule)
        if after == before:
            return rule
        rule.version += 1
        rule.updated_at = timezone.now()
        rule.save()
        _save_version(rule, actor)
        record("rule.updated", rule, actor=actor, before=before, after=rule_snapshot(rule))
    return rule


def delete_rule(*, rule: RoutingRule, actor: Any) -> None:
    """Delete a rule; its versions stay (by name) and the steps it routed keep its name and version."""
    with transaction.atomic():
        before = rule_snapshot(rule)
        pk = rule.pk
        rule.delete()
        record("rule.deleted", object_type="routingrule", object_id=pk, actor=actor, before=before)
