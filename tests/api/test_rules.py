"""Contract of the admin rules API: /api/v1/rules, /api/v1/rules/{id}, /api/v1/rules/{id}/versions."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from reviewqueue.core.models import AuditEvent
from reviewqueue.routing.models import RoutingRule, RoutingRuleVersion
from tests.factories import QueueFactory, RoutingRuleFactory, UserFactory

pytestmark = pytest.mark.django_db

FIELDS = {
    "id",
    "name",
    "position",
    "enabled",
    "conditions",
    "sample_rate",
    "action",
    "queue",
    "priority",
    "version",
    "created_at",
    "updated_at",
}


@pytest.fixture
def staff() -> APIClient:
    client = APIClient()
    client.force_authenticate(UserFactory(username="boss", is_staff=True))
    return client


@pytest.fixture
def queue() -> object:
    return QueueFactory(slug="answers")


def new_rule(**overrides: object) -> dict:
    return {
        "name": "low-confidence",
        "position": 10,
        "conditions": [{"field": "confidence", "op": "lt", "value": 0.7}],
        "action": "route",
        "queue": "answers",
        "priority": 3,
        **overrides,
    }


def test_staff_create_and_read_a_rule(staff: APIClient, queue: object) -> None:
    created = staff.post("/api/v1/rules", new_rule(), format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body) == FIELDS
    assert body | {"id": 0, "created_at": "", "updated_at": ""} == {
        **new_rule(),
        "id": 0,
        "enabled": True,
        "sample_rate": 1.0,
        "version": 1,
        "created_at": "",
        "updated_at": "",
    }
    assert staff.get(f"/api/v1/rules/{body['id']}").json() == body
    assert staff.get("/api/v1/rules").json() == [body]


def test_the_list_is_in_evaluation_order(staff: APIClient) -> None:
    RoutingRuleFactory(name="b", position=20)
    RoutingRuleFactory(name="a", position=10)
    assert [r["name"] for r in staff.get("/api/v1/rules").json()] == ["a", "b"]


def test_token_authentication_works_for_staff(queue: object) -> None:
    token = Token.objects.create(user=UserFactory(username="tok", is_staff=True))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/v1/rules").status_code == 200


def test_non_staff_get_403_and_anonymous_401(queue: object) -> None:
    rule = RoutingRuleFactory(name="r", queue=queue)
    reviewer = APIClient()
    reviewer.force_authenticate(UserFactory(username="reviewer"))
    for method, url in [
        ("get", "/api/v1/rules"),
        ("post", "/api/v1/rules"),
        ("get", f"/api/v1/rules/{rule.pk}"),
        ("patch", f"/api/v1/rules/{rule.pk}"),
        ("delete", f"/api/v1/rules/{rule.pk}"),
        ("get", f"/api/v1/rules/{rule.pk}/versions"),
    ]:
        assert getattr(reviewer, method)(url, new_rule(), format="json").status_code == 403, (method, url)
        assert getattr(APIClient(), method)(url, new_rule(), format="json").status_code == 401, (method, url)
    assert RoutingRule.objects.get().version == 1


def test_bad_conditions_answer_400_naming_the_field_and_store_nothing(staff: APIClient, queue: object) -> None:
    bad = new_rule(
        conditions=[{"field": "confidence", "op": "lt", "value": 0.7}, {"field": "kind", "op": "like", "value": "x"}]
    )
    response = staff.post("/api/v1/rules", bad, format="json")
    assert response.status_code == 400
    body = response.json()
    assert "conditions" in body["errors"]
    assert "conditions[1].op: unknown op 'like'" in body["errors"]["conditions"][0]
    assert body["detail"].startswith("conditions: ")
    assert not RoutingRule.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"queue": "missing-queue"}, "queue"),
        ({"sample_rate": 2}, "sample_rate"),
        ({"action": "delete"}, "action"),
        ({"position": "first"}, "position"),
        ({"name": ""}, "name"),
        ({"conditions": {"field": "kind"}}, "conditions"),
    ],
)
def test_other_bad_fields_answer_400_naming_them(staff: APIClient, queue: object, overrides: dict, field: str) -> None:
    response = staff.post("/api/v1/rules", new_rule(**overrides), format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not RoutingRule.objects.exists()


def test_patch_makes_a_new_version_and_the_versions_endpoint_lists_them(staff: APIClient, queue: object) -> None:
    rule_id = staff.post("/api/v1/rules", new_rule(), format="json").json()["id"]
    first = staff.patch(f"/api/v1/rules/{rule_id}", {"priority": 9}, format="json")
    assert first.status_code == 200 and first.json()["version"] == 2 and first.json()["priority"] == 9
    second = staff.patch(
        f"/api/v1/rules/{rule_id}",
        {"conditions": [{"field": "metadata.customer.tier", "op": "eq", "value": "vip"}], "enabled": False},
        format="json",
    )
    assert second.json()["version"] == 3 and second.json()["enabled"] is False
    assert second.json()["name"] == "low-confidence"  # untouched fields stay

    versions = staff.get(f"/api/v1/rules/{rule_id}/versions")
    assert versions.status_code == 200
    assert [v["version"] for v in versions.json()] == [3, 2, 1]
    assert versions.json()[1]["snapshot"]["priority"] == 9 and versions.json()[2]["snapshot"]["priority"] == 3
    assert versions.json()[0]["changed_by"] == "boss"
    assert AuditEvent.objects.filter(action="rule.updated", actor__username="boss").count() == 2


def test_a_bad_patch_changes_nothing(staff: APIClient, queue: object) -> None:
    rule_id = staff.post("/api/v1/rules", new_rule(), format="json").json()["id"]
    response = staff.patch(
        f"/api/v1/rules/{rule_id}", {"priority": 1, "conditions": [{"field": "x", "op": "eq"}]}, format="json"
    )
    assert response.status_code == 400 and "conditions" in response.json()["errors"]
    rule = RoutingRule.objects.get()
    assert (rule.version, rule.priority) == (1, 3)


def test_delete_keeps_the_versions(staff: APIClient, queue: object) -> None:
    rule_id = staff.post("/api/v1/rules", new_rule(), format="json").json()["id"]
    assert staff.delete(f"/api/v1/rules/{rule_id}").status_code == 204
    assert staff.get(f"/api/v1/rules/{rule_id}").status_code == 404
    assert RoutingRuleVersion.objects.filter(rule_name="low-confidence").count() == 1
    assert AuditEvent.objects.filter(action="rule.deleted").exists()


def test_unknown_rule_is_404(staff: APIClient) -> None:
    assert staff.get("/api/v1/rules/999").status_code == 404
    assert staff.patch("/api/v1/rules/999", {"priority": 1}, format="json").status_code == 404
