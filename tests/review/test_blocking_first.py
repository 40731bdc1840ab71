"""Steps an agent blocks on ("blocking": true) are offered first in their queue and marked
"agent waiting" for reviewers."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from reviewqueue.core.ingest import ingest_steps
from reviewqueue.review.models import ReviewItem
from reviewqueue.review.selectors import open_items
from reviewqueue.review.services import claim_next_item
from tests.factories import AgentFactory, QueueFactory, ReviewItemFactory, RoutingRuleFactory, StepFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_blocking_items_come_first_then_priority_then_age() -> None:
    alice = UserFactory(username="alice")
    queue = QueueFactory(slug="q", members=[alice])
    urgent = ReviewItemFactory(queue=queue, priority=9)
    old = ReviewItemFactory(queue=queue)
    waiting_low = ReviewItemFactory(queue=queue, step=StepFactory(blocking=True), priority=0)
    waiting_high = ReviewItemFactory(queue=queue, step=StepFactory(blocking=True), priority=3)
    assert [i.pk for i in open_items(queue)] == [waiting_high.pk, waiting_low.pk, urgent.pk, old.pk]
    claimed = []
    for _ in range(4):
        item = claim_next_item(queue=queue, user=alice)
        claimed.append(item.pk)
        item.status = "resolved"
        item.save()
    assert claimed == [waiting_high.pk, waiting_low.pk, urgent.pk, old.pk]


def test_ingest_marks_items_of_blocking_steps_and_the_claim_api_says_agent_waiting() -> None:
    alice = UserFactory(username="alice")
    queue = QueueFactory(slug="review-all", members=[alice])
    RoutingRuleFactory(name="all", conditions=[], queue=queue)
    agent = AgentFactory(name="a")
    ingest_steps(agent=agent, payloads=[{"external_id": "plain"}, {"external_id": "waits", "blocking": True}])
    assert dict(ReviewItem.objects.values_list("step__external_id", "blocking")) == {"plain": False, "waits": True}

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    body = client.post("/api/v1/queues/review-all/claim").json()
    assert body["agent_waiting"] is True and body["step"]["external_id"] == "waits" and body["step"]["blocking"]
