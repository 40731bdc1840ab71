"""Contract of /api/v1/queues: listing with counts, admin CRUD (staff only), claiming."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from reviewqueue.core.models import AuditEvent
from reviewqueue.review.models import ItemStatus, Queue, ReviewItem
from reviewqueue.review.services import submit_review
from tests.factories import QueueFactory, ReviewItemFactory, UserFactory, png_b64

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def queue(alice):
    return QueueFactory(slug="answers", name="Answers", members=[alice])


def test_reviewers_authenticate_with_a_drf_token(queue, alice) -> None:
    client = APIClient()
    assert client.get("/api/v1/queues").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    response = client.get("/api/v1/queues")
    assert response.status_code == 200 and [q["slug"] for q in response.json()] == ["answers"]


def test_token_auth_loads_the_same_user_as_the_orm_and_refuses_bad_or_inactive_tokens(queue, alice) -> None:
    from reviewqueue.api.authentication import ReviewerTokenAuthentication

    token = Token.objects.create(user=alice)
    user, found = ReviewerTokenAuthentication().authenticate_credentials(token.key)
    expected = type(alice).objects.get(pk=alice.pk)
    fields = [f.attname for f in expected._meta.concrete_fields]
    assert [getattr(user, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert found.key == token.key and found.user is user and found.created == token.created
    assert user._state.adding is False and user.is_authenticated

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}x")
    response = client.get("/api/v1/queues")
    assert response.status_code == 401 and response.json()["detail"] == "Invalid token."
    type(alice).objects.filter(pk=alice.pk).update(is_active=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.get("/api/v1/queues")
    assert response.status_code == 401 and response.json()["detail"] == "User inactive or deleted."


def test_list_shows_the_users_queues_with_counts_and_staff_see_all(queue, alice, boss) -> None:
    QueueFactory(slug="hidden")
    ReviewItemFactory(queue=queue)
    ReviewItemFactory(queue=queue)
    body = client_for(alice).get("/api/v1/queues").json()
    assert body == [
        {
            "slug": "answers",
            "name": "Answers",
            "instructions": "",
            "reviews_required": 1,
            "lease_seconds": 300,
            "sla_seconds": None,
            "timeout_action": "none",
            "escalation_queue": None,
            "rubric": [],
            "pending_count": 2,
            "claimed_count": 0,
            "overdue_count": 0,
            "done_today": 0,
        }
    ]
    staff_view = client_for(boss).get("/api/v1/queues").json()
    assert [q["slug"] for q in staff_view] == ["answers", "hidden"]
    assert staff_view[0]["members"] == ["alice"]


def test_staff_create_update_and_delete_queues(alice, boss) -> None:
    staff = client_for(boss)
    response = staff.post(
        "/api/v1/queues",
        {"slug": "refunds", "name": "Refunds", "reviews_required": 2, "members": ["alice"]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["members"] == ["alice"] and response.json()["reviews_required"] == 2
    response = staff.patch("/api/v1/queues/refunds", {"sla_seconds": 600, "timeout_action": "reject"}, format="json")
    assert response.status_code == 200 and response.json()["sla_seconds"] == 600
    assert client_for(alice).get("/api/v1/queues/refunds").json()["timeout_action"] == "reject"
    assert staff.delete("/api/v1/queues/refunds").status_code == 204
    assert not Queue.objects.filter(slug="refunds").exists()
    assert list(AuditEvent.objects.filter(object_type="queue").order_by("id").values_list("action", flat=True)) == [
        "queue.created",
        "queue.updated",
        "queue.deleted",
    ]


def test_bad_queue_input_is_a_400_naming_the_field(boss) -> None:
    response = client_for(boss).post(
        "/api/v1/queues", {"slug": "x", "name": "X", "members": ["ghost"], "reviews_required": 0}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert set(body["errors"]) == {"members", "reviews_required"} and "ghost" in body["detail"]
    assert not Queue.objects.exists()


def test_deleting_a_queue_with_items_is_refused(queue, boss) -> None:
    ReviewItemFactory(queue=queue)
    response = client_for(boss).delete("/api/v1/queues/answers")
    assert response.status_code == 409 and "1 open" in response.json()["detail"]


def test_admin_calls_are_403_for_non_staff(queue, alice) -> None:
    client = client_for(alice)
    assert client.post("/api/v1/queues", {"slug": "mine", "name": "Mine"}, format="json").status_code == 403
    assert client.patch("/api/v1/queues/answers", {"name": "Renamed"}, format="json").status_code == 403
    assert client.delete("/api/v1/queues/answers").status_code == 403
    assert Queue.objects.get(slug="answers").name == "Answers"


def test_claim_returns_the_item_and_its_step_then_resumes_it(queue, alice) -> None:
    item = ReviewItemFactory(queue=queue, priority=4)
    client = client_for(alice)
    response = client.post("/api/v1/queues/answers/claim")
    assert response.status_code == 200
    body = response.json()
    assert {"id", "queue", "status", "priority", "lease_expires_at", "due_at", "reviews_required", "reviews_count"} <= (
        set(body)
    )
    assert (body["id"], body["queue"], body["status"], body["priority"]) == (item.pk, "answers", "claimed", 4)
    assert body["step"]["id"] == item.step_id and body["step"]["output"] == item.step.output
    assert body["lease_expires_at"]
    assert client.post("/api/v1/queues/answers/claim").json()["id"] == item.pk


def test_claim_answers_204_when_nothing_is_left(queue, alice) -> None:
    response = client_for(alice).post("/api/v1/queues/answers/claim")
    assert response.status_code == 204 and response.content == b""


def test_non_members_get_404_for_a_queue(queue, boss) -> None:
    ReviewItemFactory(queue=queue)
    outsider = client_for(UserFactory(username="outsider"))
    assert outsider.post("/api/v1/queues/answers/claim").status_code == 404
    assert outsider.get("/api/v1/queues/answers").status_code == 404
    assert client_for(boss).post("/api/v1/queues/answers/claim").status_code == 404  # staff are not members
    assert ReviewItem.objects.get().status == ItemStatus.PENDING


def test_the_claim_payload_is_blind_to_other_reviews(alice) -> None:
    bob = UserFactory(username="bob")
    queue = QueueFactory(slug="double", reviews_required=2, members=[alice, bob])
    item = ReviewItemFactory(queue=queue)
    client_for(bob).post("/api/v1/queues/double/claim")
    submit_review(item_id=item.pk, user=bob, verdict="reject", reason="SECRET-REASON")
    response = client_for(alice).post("/api/v1/queues/double/claim")
    assert response.json()["id"] == item.pk and response.json()["reviews_count"] == 1
    text = response.content.decode()
    assert "SECRET-REASON" not in text and "reject" not in text and "bob" not in text
    assert "reviews" not in response.json()


def test_the_claimed_step_is_the_one_json_form_of_the_step(queue, alice) -> None:
    """The claim loads the step, its trace, its latest queue and its attachments in one
    hand-written query: the same JSON as through `step_queryset` (the ORM)."""
    check_the_claimed_step_is_the_one_json_form_of_the_step(queue, alice)


@pytest.mark.django_db(transaction=True)
def test_a_claim_owning_its_transaction_reads_its_step_in_the_claiming_statement(queue, alice, on_postgres) -> None:
    """Outside a caller's transaction (as in production) the claim on PostgreSQL reads the step
    in the claiming statement (`rows.Joined`): the same JSON, and no query of its own."""
    statements: list[str] = []

    def note(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(note):
        check_the_claimed_step_is_the_one_json_form_of_the_step(queue, alice)
    claims = [sql for sql in statements if "UPDATE review_reviewitem SET status = 'claimed'" in sql]
    assert len(claims) == 2
    if on_postgres:
        assert all("LEFT JOIN LATERAL" in sql and "FROM core_step s" in sql for sql in claims)
        assert not [sql for sql in statements if sql.startswith("SELECT s.id")]  # no separate step read


def check_the_claimed_step_is_the_one_json_form_of_the_step(queue, alice) -> None:

    from reviewqueue.api.steps import step_queryset, step_representation
    from reviewqueue.core.ingest import ingest_steps
    from reviewqueue.core.models import Agent, Attachment

    def png(color: str) -> str:
        return png_b64((40, 20), color)

    agent = Agent.objects.create(name="browser-agent")
    ingest_steps(
        agent=agent,
        payloads=[
            {
                "external_id": "s1",
                "trace_id": "t-1",
                "kind": "tool_call",
                "name": "computer",
                "input": [{"role": "user", "content": "click it"}],
                "output": {"action": "click", "x": 1, "y": 2},
                "metadata": {"k": [1, 2]},
                "confidence": 0.25,
                "attachments": [
                    {"filename": "a.png", "content_type": "image/png", "data": png("#336699")},
                    {"filename": "b.png", "content_type": "image/png", "data": png("#993366")},
                ],
            },
            {"external_id": "s2", "output": "plain"},
        ],
    )
    with_attachments, plain = (Attachment.objects.order_by("id").first().step, agent.steps.get(external_id="s2"))
    ReviewItem.objects.all().delete()
    bodies = []
    for step in (with_attachments, plain):
        ReviewItemFactory(queue=queue, step=step)
        claimed = client_for(alice).post("/api/v1/queues/answers/claim")
        expected = step_representation(step_queryset().get(pk=step.pk), request=claimed.wsgi_request)
        assert claimed.json()["step"] == expected
        bodies.append(expected)
        submit_review(item_id=claimed.json()["id"], user=alice, verdict="approve")
    assert [a["filename"] for a in bodies[0]["attachments"]] == ["a.png", "b.png"]
    assert bodies[0]["trace_id"] == "t-1" and bodies[0]["queue"] == "answers"
    assert bodies[1]["attachments"] == [] and bodies[1]["trace_id"] is None
