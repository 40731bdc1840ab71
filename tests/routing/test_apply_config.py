"""`manage.py apply_config`: queues and rules from YAML/JSON, idempotent, all-or-nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from reviewqueue.core.models import AuditEvent
from reviewqueue.review.models import Queue
from reviewqueue.routing.models import RoutingRule, RoutingRuleVersion
from tests.factories import QueueFactory, RoutingRuleFactory, UserFactory

pytestmark = pytest.mark.django_db

DEMO_CONFIG = Path(settings.BASE_DIR) / "docs" / "examples" / "reviewqueue.yaml"

RULES = {
    "rules": [
        {
            "name": "low-confidence",
            "position": 10,
            "conditions": [{"field": "confidence", "op": "lt", "value": 0.7}],
            "queue": "answers",
            "priority": 2,
        },
        {
            "name": "lookups",
            "position": 20,
            "action": "auto_approve",
            "conditions": [{"field": "name", "op": "glob", "value": "get_*"}],
        },
    ]
}


def apply(path: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("apply_config", str(path), *args, stdout=out)
    return out.getvalue()


def write(tmp_path: Path, data: object, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_rules_are_created_then_left_unchanged(tmp_path: Path) -> None:
    QueueFactory(slug="answers")
    path = write(tmp_path, RULES)
    out = apply(path)
    assert "rule low-confidence: created" in out and "rule lookups: created" in out
    rule = RoutingRule.objects.get(name="low-confidence")
    assert (rule.queue.slug, rule.priority, rule.version) == ("answers", 2, 1)
    events = AuditEvent.objects.count()

    out = apply(path)
    assert "rule low-confidence: unchanged" in out and "rule lookups: unchanged" in out
    assert "rules: 0 created, 0 updated, 2 unchanged" in out
    assert AuditEvent.objects.count() == events
    assert RoutingRuleVersion.objects.count() == 2


def test_a_changed_rule_is_updated_and_only_given_fields_are_compared(tmp_path: Path) -> None:
    RoutingRuleFactory(name="lookups", position=20, action="auto_approve", queue=None, priority=50, enabled=True)
    path = write(tmp_path, {"rules": [{"name": "lookups", "position": 20, "action": "auto_approve"}]})
    assert "rule lookups: unchanged" in apply(path)  # priority is not in the file: not compared

    path = write(tmp_path, {"rules": [{"name": "lookups", "position": 25}]})
    assert "rule lookups: updated" in apply(path)
    rule = RoutingRule.objects.get()
    assert (rule.position, rule.priority, rule.version) == (25, 50, 2)


def test_a_bad_entry_changes_nothing_and_says_which_entry(tmp_path: Path) -> None:
    QueueFactory(slug="answers")
    data = {
        "rules": [RULES["rules"][0], {"name": "broken", "conditions": [{"field": "kind", "op": "like", "value": 1}]}]
    }
    with pytest.raises(CommandError) as error:
        apply(write(tmp_path, data))
    assert "rules[1] (broken): conditions: conditions[0].op: unknown op 'like'" in str(error.value)
    assert not RoutingRule.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.yaml", "rules: [unclosed", "is not valid YAML"),
        ("bad.json", "{", "is not valid JSON"),
        ("list.yaml", "- a\n- b\n", "must hold an object"),
        ("extra.yaml", "rulez: []\n", "unknown top-level key 'rulez'"),
        ("notlist.yaml", "rules: {name: x}\n", "'rules' must be a list"),
        ("noname.yaml", "rules: [{position: 1}]\n", "rules[0]: name: required"),
    ],
)
def test_unreadable_files_are_refused(tmp_path: Path, name: str, content: str, message: str) -> None:
    with pytest.raises(CommandError) as error:
        apply(write(tmp_path, content, name))
    assert message in str(error.value)


def test_dry_run_saves_nothing(tmp_path: Path) -> None:
    QueueFactory(slug="answers")
    out = apply(write(tmp_path, RULES), "--dry-run")
    assert "rule low-confidence: created" in out and "dry run, nothing saved" in out
    assert not RoutingRule.objects.exists()


def test_the_demo_config_applies_and_applying_it_again_changes_nothing(tmp_path: Path) -> None:
    for username in ("reviewer", "reviewer2", "admin"):
        UserFactory(username=username)
    out = apply(DEMO_CONFIG)
    assert "queues: 4 created" in out and "rules: 6 created" in out
    answers = Queue.objects.get(slug="support-answers")
    # The escalation queue comes later in the file than the queues that name it.
    assert answers.escalation_queue.slug == "escalations"
    assert Queue.objects.get(slug="tool-calls").escalation_queue.slug == "escalations"
    assert sorted(Queue.objects.get(slug="tool-calls").members.values_list("username", flat=True)) == [
        "reviewer",
        "reviewer2",
    ]
    assert RoutingRule.objects.get(name="spot-check-confident-answers").sample_rate == 0.05
    events, versions = AuditEvent.objects.count(), RoutingRuleVersion.objects.count()

    out = apply(DEMO_CONFIG)
    assert "queues: 0 created, 0 updated, 4 unchanged" in out
    assert "rules: 0 created, 0 updated, 6 unchanged" in out
    assert (AuditEvent.objects.count(), RoutingRuleVersion.objects.count()) == (events, versions)


def test_queue_changes_are_applied_and_bad_queues_roll_everything_back(tmp_path: Path) -> None:
    UserFactory(username="reviewer")
    queue = {"slug": "answers", "name": "Answers", "reviews_required": 1, "members": ["reviewer"]}
    apply(write(tmp_path, {"queues": [queue]}))
    out = apply(write(tmp_path, {"queues": [{**queue, "reviews_required": 2}]}))
    assert "queue answers: updated" in out
    assert Queue.objects.get().reviews_required == 2

    bad = {"queues": [{"slug": "new-one", "name": "New"}, {**queue, "members": ["nobody-by-this-name"]}], **RULES}
    with pytest.raises(CommandError) as error:
        apply(write(tmp_path, bad))
    assert "queues[1] (answers)" in str(error.value)
    assert list(Queue.objects.values_list("slug", flat=True)) == ["answers"]
    assert not RoutingRule.objects.exists()
