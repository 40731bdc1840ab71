"""Contract of /api/v1/items/{id}/…: reviews (201 / 400 / 409), release, heartbeat, assign, adjudicate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from reviewqueue.review.models import Decision, ItemStatus, Review, ReviewItem
from reviewqueue.review.services import claim_next_item
from tests.factories import ReviewItemFactory, UserFactory

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def claimed(queue, alice) -> ReviewItem:
    item = ReviewItemFactory(queue=queue)
    claim_next_item(queue=queue, user=alice)
    return item


def test_a_review_is_created_with_201(claimed, alice) -> None:
    response = client_for(alice).post(
        f"/api/v1/items/{claimed.pk}/reviews",
        {"verdict": "correct", "output": {"role": "assistant", "content": "Fixed."}, "comment": "typo"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["verdict"], body["output"], body["reviewer"], body["item"]) == (
        "correct",
        {"role": "assistant", "content": "Fixed."},
        "alice",
        claimed.pk,
    )
    assert Decision.objects.get(step=claimed.step).verdict == "corrected"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"verdict": "nope"}, "verdict"),
        ({"verdict": "correct"}, "output"),
        ({"verdict": "reject"}, "reason"),
        ({"verdict": "approve", "labels": {"x": 1}}, "labels"),
        ({"verdict": "approve", "colour": "red"}, "colour"),
    ],
)
def test_bad_reviews_are_400_naming_the_field(claimed, alice, payload, field) -> None:
    response = client_for(alice).post(f"/api/v1/items/{claimed.pk}/reviews", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"] and response.json()["detail"].startswith(field)
    assert not Review.objects.exists()


def test_a_review_on_a_lost_lease_is_409_with_a_clear_message(claimed, alice, bob) -> None:
    ReviewItem.objects.filter(pk=claimed.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    response = client_for(alice).post(f"/api/v1/items/{claimed.pk}/reviews", {"verdict": "approve"}, format="json")
    assert response.status_code == 409
    assert response.json()["detail"].startswith(f"Your lease on item {claimed.pk} expired at")
    response = client_for(bob).post(f"/api/v1/items/{claimed.pk}/reviews", {"verdict": "approve"}, format="json")
    assert response.status_code == 409 and "claim it first" in response.json()["detail"]
    assert not Review.objects.exists()


def test_a_review_on_someone_elses_lease_is_409(claimed, bob) -> None:
    response = client_for(bob).post(f"/api/v1/items/{claimed.pk}/reviews", {"verdict": "approve"}, format="json")
    assert response.status_code == 409 and "held by another reviewer" in response.json()["detail"]


def test_items_in_other_queues_are_404(claimed) -> None:
    outsider = client_for(UserFactory(username="outsider"))
    assert (
        outsider.post(f"/api/v1/items/{claimed.pk}/reviews", {"verdict": "approve"}, format="json").status_code == 404
    )
    assert outsider.post(f"/api/v1/items/{claimed.pk}/release").status_code == 404
    assert outsider.get(f"/api/v1/items/{claimed.pk}").status_code == 404


def test_release_and_heartbeat(claimed, alice, bob) -> None:
    assert client_for(bob).post(f"/api/v1/items/{claimed.pk}/heartbeat").status_code == 409
    response = client_for(alice).post(f"/api/v1/items/{claimed.pk}/heartbeat")
    assert response.status_code == 200 and response.json()["lease_expires_at"]
    assert client_for(bob).post(f"/api/v1/items/{claimed.pk}/release").status_code == 409
    response = client_for(alice).post(f"/api/v1/items/{claimed.pk}/release")
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert ReviewItem.objects.get(pk=claimed.pk).status == ItemStatus.PENDING


def test_item_detail_is_for_staff_or_the_holder_and_only_staff_see_reviews(claimed, alice, bob, boss) -> None:
    assert client_for(bob).get(f"/api/v1/items/{claimed.pk}").status_code == 404
    holder = client_for(alice).get(f"/api/v1/items/{claimed.pk}").json()
    assert holder["claimed_by"] == "alice" and "reviews" not in holder
    staff = client_for(boss).get(f"/api/v1/items/{claimed.pk}").json()
    assert staff["reviews"] == [] and staff["step"]["id"] == claimed.step_id


def test_assign_is_staff_only_and_checks_the_username(queue, alice, bob, boss) -> None:
    item = ReviewItemFactory(queue=queue)
    url = f"/api/v1/items/{item.pk}/assign"
    assert client_for(alice).post(url, {"username": "bob"}, format="json").status_code == 403
    response = client_for(boss).post(url, {"username": "ghost"}, format="json")
    assert response.status_code == 400 and "username" in response.json()["errors"]
    response = client_for(boss).post(url, {"username": "bob"}, format="json")
    assert response.status_code == 200 and response.json() == {"id": item.pk, "assigned_to": "bob"}
    assert client_for(alice).post("/api/v1/queues/answers/claim").status_code == 204
    assert client_for(boss).post(url, {"username": None}, format="json").json()["assigned_to"] is None
    assert client_for(alice).post("/api/v1/queues/answers/claim").json()["id"] == item.pk


def test_adjudicate_is_staff_only(claimed, alice, boss) -> None:
    client_for(alice).post(f"/api/v1/items/{claimed.pk}/reviews", {"verdict": "escalate"}, format="json")
    url = f"/api/v1/items/{claimed.pk}/adjudicate"
    assert client_for(alice).post(url, {"verdict": "approve"}, format="json").status_code == 403
    response = client_for(boss).post(url, {"verdict": "reject", "reason": "unsafe"}, format="json")
    assert response.status_code == 201
    assert (response.json()["verdict"], response.json()["method"], response.json()["reviewer"]) == (
        "rejected",
        "adjudicated",
        "boss",
    )
    assert client_for(boss).post(url, {"verdict": "approve"}, format="json").status_code == 409
