"""Home: the user's queues with their counts."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from reviewqueue.review.services import claim_next_item, submit_review
from tests.factories import QueueFactory, ReviewItemFactory, StepFactory

pytestmark = pytest.mark.django_db


def count(html: str, name: str) -> list[int]:
    return [int(n) for n in re.findall(rf'data-count="{name}">(\d+)<', html)]


def test_anonymous_users_are_sent_to_login(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/"


def test_home_lists_my_queues_with_counts(rita, reviewer, queue, htmx):
    QueueFactory(slug="not-mine", name="Hidden queue")
    ReviewItemFactory(queue=queue, step=StepFactory(blocking=True), priority=-1)
    ReviewItemFactory(queue=queue, due_at=timezone.now() - timedelta(minutes=5))
    ReviewItemFactory(queue=queue)
    done = ReviewItemFactory(queue=queue, priority=10)
    assert claim_next_item(queue=queue, user=reviewer) == done
    submit_review(item_id=done.pk, user=reviewer, verdict="approve")
    claim_next_item(queue=queue, user=reviewer)

    response = rita.get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Support answers" in html and "Hidden queue" not in html
    assert count(html, "pending") == [2]
    assert count(html, "claimed") == [1]
    assert count(html, "overdue") == [1]
    assert count(html, "done-today") == [1]
    assert "1 agent waiting" in html
    assert f'href="/review/{queue.slug}/"' in html and "Start reviewing" in html
    fragment = rita.get("/", **htmx).content.decode()
    assert fragment.lstrip().startswith('<section id="queues"') and "<html" not in fragment


def test_home_without_queues(client_for, outsider):
    html = client_for(outsider).get("/").content.decode()
    assert "You are not a reviewer of any queue" in html


def test_login_page_and_redirect(client, reviewer):
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and 'name="username"' in page.content.decode()
    response = client.post("/accounts/login/", {"username": "rita", "password": "pw-for-tests-1"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/accounts/password_change/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
