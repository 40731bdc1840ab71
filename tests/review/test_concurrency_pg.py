"""Real concurrency on PostgreSQL: many reviewers claiming and reviewing at once.

Every item must get exactly the reviews it needs, from distinct reviewers, with no item held by two
reviewers at once and nothing lost. Each thread is one reviewer with its own database connection.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
from django.db import connections

from reviewqueue.core.models import Agent, Step, StepStatus
from reviewqueue.review.models import Decision, ItemStatus, Queue, Review, ReviewItem
from reviewqueue.review.services import claim_next_item, submit_review
from tests.factories import UserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ITEMS = 2000
REVIEWERS = 12


def make_items(queue: Queue, count: int) -> None:
    agent = Agent.objects.create(name=f"agent-{queue.slug}")
    steps = Step.objects.bulk_create(
        Step(agent=agent, external_id=f"s{i}", output={"content": f"answer {i}"}, status=StepStatus.PENDING_REVIEW)
        for i in range(count)
    )
    ReviewItem.objects.bulk_create(ReviewItem(queue=queue, step=step, priority=i % 7) for i, step in enumerate(steps))


def run_reviewers(queue: Queue, users: list) -> tuple[dict[int, list], list[BaseException]]:
    """Each user reviews until nothing is left. Returns, per item, the (user, held_from, held_until)
    inner bounds of each hold — claim returned .. submit called — and any exceptions raised."""
    holds: dict[int, list[list]] = defaultdict(list)
    errors: list[BaseException] = []
    record = threading.Lock()
    start = threading.Barrier(len(users))

    def reviewer(user) -> None:
        try:
            start.wait()
            while True:
                item = claim_next_item(queue=queue, user=user)
                if item is None:
                    return
                hold = [user.pk, time.monotonic(), None]
                with record:  # recorded at claim time, so a claim whose review fails is counted too
                    holds[item.pk].append(hold)
                verdict, reason = ("reject", "wrong") if item.pk % 3 == 0 else ("approve", "")
                hold[2] = time.monotonic()
                submit_review(item_id=item.pk, user=user, verdict=verdict, reason=reason)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=reviewer, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a reviewer thread hung"
    return holds, errors


@pytest.mark.parametrize("reviews_required", [1, 2])
def test_concurrent_reviewers_never_share_an_item_and_lose_nothing(reviews_required: int) -> None:
    users = [UserFactory(username=f"r{reviews_required}-{i}") for i in range(REVIEWERS)]
    queue = Queue.objects.create(slug=f"load-{reviews_required}", name="Load", reviews_required=reviews_required)
    queue.members.add(*users)
    make_items(queue, ITEMS)

    holds, errors = run_reviewers(queue, users)

    assert errors == []  # no LeaseLost, no unique-constraint Conflict, nothing else
    assert len(holds) == ITEMS
    for item_id, item_holds in holds.items():
        reviewers = [user for user, _, _ in item_holds]
        assert len(reviewers) == reviews_required, (item_id, item_holds)
        assert len(set(reviewers)) == reviews_required, (item_id, item_holds)
        spans = sorted((start, end) for _, start, end in item_holds)
        for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
            assert end <= next_start, f"item {item_id} was held by two reviewers at once: {item_holds}"
    assert ReviewItem.objects.filter(queue=queue).exclude(status=ItemStatus.RESOLVED).count() == 0
    assert Review.objects.filter(item__queue=queue).count() == ITEMS * reviews_required
    assert Decision.objects.filter(item__queue=queue).count() == ITEMS
    assert (
        Decision.objects.filter(item__queue=queue, method="agreement" if reviews_required > 1 else "single").count()
        == ITEMS
    )
    assert not Step.objects.filter(status=StepStatus.PENDING_REVIEW).exists()
    # the work was shared: every reviewer did some
    per_user = Review.objects.filter(item__queue=queue).values_list("reviewer", flat=True)
    assert set(per_user) == {u.pk for u in users}
