"""Images are served from our own normalised copies, to the queue's reviewers only."""

from __future__ import annotations

import pytest

from reviewqueue.core.ingest import ingest_steps
from reviewqueue.core.models import Agent, Attachment
from reviewqueue.review.models import ReviewItem
from tests.factories import ReviewItemFactory, UserFactory, png_b64

pytestmark = pytest.mark.django_db


def png() -> str:
    return png_b64((200, 100), "#336699")


@pytest.fixture
def screenshot_item(queue):
    agent = Agent.objects.create(name="browser-agent")
    ingest_steps(
        agent=agent,
        payloads=[
            {
                "external_id": "s1",
                "kind": "tool_call",
                "name": "computer",
                "output": {"action": "click", "x": 120, "y": 40},
                "attachments": [{"filename": "shot.png", "content_type": "image/png", "data": png()}],
            }
        ],
    )
    attachment = Attachment.objects.get()
    ReviewItem.objects.filter(step=attachment.step).delete()
    return ReviewItemFactory(queue=queue, step=attachment.step), attachment


def test_member_sees_the_screenshot_with_the_click_marked(rita, queue, screenshot_item):
    item, attachment = screenshot_item
    html = rita.get(f"/review/{queue.slug}/").content.decode()
    assert f'<image href="/attachments/{attachment.pk}/"' in html
    assert 'cx="120.0" cy="40.0"' in html
    assert f'src="/attachments/{attachment.pk}/thumbnail/"' in html
    image = rita.get(f"/attachments/{attachment.pk}/")
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert image["X-Content-Type-Options"] == "nosniff"
    assert b"".join(image.streaming_content).startswith(b"\x89PNG")
    assert rita.get(f"/attachments/{attachment.pk}/thumbnail/").status_code == 200


def test_non_members_cannot_load_images(client_for, screenshot_item):
    _item, attachment = screenshot_item
    assert client_for(UserFactory(username="eve")).get(f"/attachments/{attachment.pk}/").status_code == 404
