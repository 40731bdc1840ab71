"""The Django admin saves rules through the routing services (validated, versioned, audited)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from reviewqueue.routing.models import RoutingRule, RoutingRuleVersion
from tests.factories import QueueFactory, RoutingRuleFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def form(**overrides: object) -> dict:
    return {
        "name": "low",
        "position": "1",
        "enabled": "on",
        "conditions": json.dumps([{"field": "confidence", "op": "lt", "value": 0.7}]),
        "sample_rate": "1",
        "action": "route",
        "queue": str(QueueFactory(slug="answers").pk),
        "priority": "0",
        **overrides,
    }


def test_adding_and_changing_a_rule_in_the_admin_makes_versions(admin_client: Client) -> None:
    response = admin_client.post("/admin/routing/routingrule/add/", form())
    assert response.status_code == 302
    rule = RoutingRule.objects.get()
    response = admin_client.post(f"/admin/routing/routingrule/{rule.pk}/change/", form(priority="4"))
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.priority, rule.version) == (4, 2)
    assert list(RoutingRuleVersion.objects.values_list("version", flat=True)) == [2, 1]
    assert admin_client.get("/admin/routing/routingrule/").status_code == 200
    assert admin_client.get("/admin/routing/routingruleversion/").status_code == 200


def test_bad_conditions_are_shown_on_the_form(admin_client: Client) -> None:
    bad = form(conditions=json.dumps([{"field": "kind", "op": "like", "value": "x"}]))
    response = admin_client.post("/admin/routing/routingrule/add/", bad)
    assert response.status_code == 200
    assert "conditions[0].op: unknown op &#x27;like&#x27;" in response.content.decode()
    assert not RoutingRule.objects.exists()


def test_versions_are_read_only(admin_client: Client) -> None:
    RoutingRuleFactory(name="r")
    assert admin_client.get("/admin/routing/routingruleversion/add/").status_code == 403
