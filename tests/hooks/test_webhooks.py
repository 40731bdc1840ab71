"""Webhooks (DESIGN §4): signed deliveries to a real local receiver, retries with a stable event
id, no retry on 4xx, redirects not followed, order per step, SSRF refusals, the admin API."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_q.conf import Conf
from rest_framework.test import APIClient

from reviewqueue.core.models import AuditEvent
from reviewqueue.hooks import notify
from reviewqueue.hooks.models import DeliveryStatus, Webhook, WebhookDelivery
from reviewqueue.hooks.net import UnsafeTarget, check_url
from reviewqueue.hooks.services import (
    MAX_ATTEMPTS,
    deliver_due,
    enqueue_event,
    retry_delay,
    send_test_event,
    signature,
    step_webhooks,
    verify_signature,
)
from reviewqueue.review.services import amend_review, claim_next_item, submit_review
from tests.factories import AgentFactory, QueueFactory, ReviewItemFactory, StepFactory, UserFactory


class Receiver:
    """A real HTTP server on 127.0.0.1 answering with the given statuses in turn (the last one
    repeats), recording every request."""

    def __init__(self, statuses: list[int], location: str = "") -> None:
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def private_ok(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_FIRST_RETRY_SECONDS = 0


@pytest.fixture
def sync_tasks(monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def receiver_factory():
    receivers: list[Receiver] = []

    def make(statuses: list[int], location: str = "") -> Receiver:
        receivers.append(Receiver(statuses, location))
        return receivers[-1]

    yield make
    for r in receivers:
        r.close()


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"id":"1"}'
    expected = "sha256=" + hmac.new(b"s3cret-s3cret-s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("s3cret-s3cret-s3cret", "1700000000", body) == expected
    now = str(int(time.time()))
    good = signature("s3cret-s3cret-s3cret", now, body)
    assert verify_signature("s3cret-s3cret-s3cret", now, body, good)
    assert not verify_signature("another-secret-value", now, body, good)
    assert not verify_signature("s3cret-s3cret-s3cret", now, body + b" ", good)
    old = str(int(time.time()) - 3600)
    assert not verify_signature("s3cret-s3cret-s3cret", old, body, signature("s3cret-s3cret-s3cret", old, body))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "http://user:pw@example.com/hook",
    ],
)
def test_ssrf_targets_are_refused(url: str, settings) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    with pytest.raises(UnsafeTarget):
        check_url(url)


def test_private_targets_allowed_by_the_setting(settings) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    assert check_url("http://127.0.0.1:9/hook") == "http://127.0.0.1:9/hook"


@pytest.mark.django_db(transaction=True)
def test_decision_is_delivered_signed_and_retried_with_the_same_event_id(
    private_ok, sync_tasks, receiver_factory
) -> None:
    receiver = receiver_factory([503, 200])
    agent = AgentFactory(name="hooked")
    hook = Webhook.objects.create(agent=agent, url=receiver.url, secret="whsec_test_secret_value")
    alice = UserFactory(username="alice")
    queue = QueueFactory(slug="q", members=[alice])
    item = ReviewItemFactory(queue=queue, step=StepFactory(agent=agent))

    claim_next_item(queue=queue, user=alice)
    submit_review(item_id=item.pk, user=alice, verdict="approve")  # on commit: signal → delivery task (sync)

    assert len(receiver.requests) == 2  # 503, then the retry got 200
    first, second = receiver.requests
    assert first["body"] == second["body"]
    event = json.loads(second["body"])
    assert event["type"] == "step.decided" and event["data"]["step"]["id"] == item.step_id
    assert event["data"]["decision"]["status"] == "approved" and event["data"]["decision"]["reviewer"] == "alice"
    for request in receiver.requests:
        headers = request["headers"]
        assert headers["X-Reviewqueue-Event"] == "step.decided"
        assert verify_signature(
            hook.secret, headers["X-Reviewqueue-Timestamp"], request["body"], headers["X-Reviewqueue-Signature"]
        )
    delivery = WebhookDelivery.objects.get(webhook=hook)
    assert str(delivery.event_id) == event["id"] and delivery.status == DeliveryStatus.DELIVERED
    assert [(a.number, a.status_code) for a in delivery.attempt_log.all()] == [(1, 503), (2, 200)]
    assert all(a.response_ms is not None for a in delivery.attempt_log.all())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "outcome"), [(400, "failed"), (404, "failed"), (429, "retrying"), (500, "retrying")]
)
def test_4xx_is_not_retried_except_429(private_ok, receiver_factory, status: int, outcome: str) -> None:
    receiver = receiver_factory([status])
    hook = Webhook.objects.create(agent=AgentFactory(name="a"), url=receiver.url)
    delivery = send_test_event(webhook=hook)
    assert deliver_due(webhook_id=hook.pk)[outcome] == 1
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.last_status_code == status
    assert delivery.status == (DeliveryStatus.FAILED if outcome == "failed" else DeliveryStatus.PENDING)


@pytest.mark.django_db
def test_redirects_are_not_followed(private_ok, receiver_factory) -> None:
    target = receiver_factory([200])
    redirecting = receiver_factory([302], location=target.url)
    hook = Webhook.objects.create(agent=AgentFactory(name="a"), url=redirecting.url)
    delivery = send_test_event(webhook=hook)
    assert deliver_due(webhook_id=hook.pk)["failed"] == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and "redirect" in delivery.last_error
    assert target.requests == []


@pytest.mark.django_db
def test_gives_up_after_the_last_attempt_and_network_errors_are_retried(private_ok) -> None:
    hook = Webhook.objects.create(agent=AgentFactory(name="a"), url="http://127.0.0.1:9/closed-port")
    delivery = send_test_event(webhook=hook)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        deliver_due(webhook_id=hook.pk)
        delivery.refresh_from_db()
        assert delivery.attempts == attempt and delivery.last_status_code is None and delivery.last_error
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempt_log.count() == MAX_ATTEMPTS >= 6


def test_backoff_first_retry_within_seconds_and_attempts_span_about_an_hour(settings) -> None:
    settings.WEBHOOK_FIRST_RETRY_SECONDS = 10
    delays = [retry_delay(n) for n in range(1, MAX_ATTEMPTS)]
    assert delays[0] == 10 and delays == sorted(delays)
    assert 45 * 60 <= sum(delays[:5]) <= 90 * 60  # the 6th attempt comes after about an hour


@pytest.mark.django_db
def test_a_receiver_that_was_down_gets_every_event_in_order_per_step(private_ok, receiver_factory) -> None:
    receiver = receiver_factory([503])
    agent = AgentFactory(name="a")
    hook = Webhook.objects.create(agent=agent, url=receiver.url)
    step = StepFactory(agent=agent)
    other = StepFactory(agent=agent)
    escalated = enqueue_event(event_type="item.escalated", step_id=step.pk)[0]
    deliver_due(webhook_id=hook.pk)  # the receiver is down: escalated is retrying
    decided = enqueue_event(event_type="step.decided", step_id=step.pk)[0]
    unrelated = enqueue_event(event_type="step.decided", step_id=other.pk)[0]
    deliver_due(webhook_id=hook.pk)
    # decided waits behind escalated (same step); the other step's event is not held back
    assert WebhookDelivery.objects.get(pk=decided.pk).attempts == 0
    assert WebhookDelivery.objects.get(pk=unrelated.pk).attempts == 1

    receiver.statuses = [200]  # back up
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert deliver_due(webhook_id=hook.pk) == {"delivered": 3, "retrying": 0, "failed": 0}
    delivered = [json.loads(r["body"]) for r in receiver.requests if r is not None][-3:]
    order = [(e["type"], e["data"]["step"]["id"]) for e in delivered]
    assert order.index(("item.escalated", step.pk)) < order.index(("step.decided", step.pk))
    assert {d.status for d in WebhookDelivery.objects.all()} == {DeliveryStatus.DELIVERED}
    assert str(escalated.event_id) in {e["id"] for e in delivered}


@pytest.mark.django_db
def test_disabled_or_unsubscribed_webhooks_get_nothing() -> None:
    agent = AgentFactory(name="a")
    Webhook.objects.create(agent=agent, url="https://example.com/1", enabled=False)
    Webhook.objects.create(agent=agent, url="https://example.com/2", events=["item.escalated"])
    assert enqueue_event(event_type="step.decided", step_id=StepFactory(agent=agent).pk) == []


@pytest.mark.django_db
def test_a_steps_webhooks_are_its_agents_enabled_ones_as_the_orm_reads_them() -> None:
    agent, other = AgentFactory(name="a"), AgentFactory(name="b")
    later = Webhook.objects.create(agent=agent, url="https://example.com/2", events=["item.escalated"])
    first = Webhook.objects.create(agent=agent, url="https://example.com/1", secret="s" * 20)
    Webhook.objects.filter(pk=first.pk).update(id=later.pk + 1)  # ids, not creation, give the order
    Webhook.objects.create(agent=agent, url="https://example.com/off", enabled=False)
    Webhook.objects.create(agent=other, url="https://example.com/other")
    step = StepFactory(agent=agent)
    expected = list(Webhook.objects.filter(agent__steps__id=step.pk, enabled=True))
    found = step_webhooks(step.pk)
    assert [h.pk for h in found] == [h.pk for h in expected] == [later.pk, later.pk + 1]
    for mine, orms in zip(found, expected, strict=True):
        for field in Webhook._meta.concrete_fields:
            assert getattr(mine, field.attname) == getattr(orms, field.attname), field.name
    assert step_webhooks(StepFactory(agent=AgentFactory(name="c")).pk) == []


@pytest.fixture
def staff_client(db):
    admin = UserFactory(username="admin", is_staff=True)
    client = APIClient()
    client.force_authenticate(admin)
    return client


@pytest.mark.django_db
def test_webhooks_api_crud_for_staff(staff_client, settings, monkeypatch) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    monkeypatch.setattr("reviewqueue.hooks.net.socket.getaddrinfo", fake_public_dns)
    AgentFactory(name="bot")
    created = staff_client.post(
        "/api/v1/webhooks", {"agent": "bot", "url": "https://hooks.example.com/rq"}, format="json"
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["events"] == ["item.escalated", "step.decided"]
    listed = staff_client.get("/api/v1/webhooks").json()["results"]
    assert listed[0]["url"] == "https://hooks.example.com/rq" and listed[0]["secret"] is None
    patched = staff_client.patch(
        f"/api/v1/webhooks/{body['id']}", {"enabled": False, "events": ["step.decided"]}, format="json"
    )
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    assert patched.json()["events"] == ["step.decided"]
    test = staff_client.post(f"/api/v1/webhooks/{body['id']}/test")
    assert test.status_code == 202
    deliveries = staff_client.get(f"/api/v1/webhooks/{body['id']}/deliveries").json()["results"]
    assert deliveries[0]["type"] == "webhook.test" and deliveries[0]["status"] == "pending"
    assert staff_client.delete(f"/api/v1/webhooks/{body['id']}").status_code == 204
    assert AuditEvent.objects.filter(action__startswith="webhook.").count() == 3


def fake_public_dns(host, port, *args, **kwargs):
    import ipaddress
    import socket

    try:
        address = str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        address = "10.0.0.5" if host == "internal.example.com" else "93.184.215.14"
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


@pytest.mark.django_db
def test_webhooks_api_validates_and_refuses_private_targets(staff_client, settings, monkeypatch) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    monkeypatch.setattr("reviewqueue.hooks.net.socket.getaddrinfo", fake_public_dns)
    AgentFactory(name="bot")
    for url, message in [
        ("http://127.0.0.1:8000/x", "loopback"),
        ("http://internal.example.com/x", "private"),
        ("http://169.254.169.254/", "link-local"),
        ("file:///etc/passwd", "http"),
    ]:
        response = staff_client.post("/api/v1/webhooks", {"agent": "bot", "url": url}, format="json")
        assert response.status_code == 400 and message in response.json()["errors"]["url"][0], url
    bad = staff_client.post(
        "/api/v1/webhooks", {"agent": "nobody", "url": "https://a.example.com", "events": ["x"]}, format="json"
    )
    assert set(bad.json()["errors"]) == {"agent", "events"}
    assert Webhook.objects.count() == 0


@pytest.mark.django_db
def test_webhooks_api_is_staff_only() -> None:
    client = APIClient()
    client.force_authenticate(UserFactory(username="reviewer"))
    assert client.get("/api/v1/webhooks").status_code == 403
    assert APIClient().get("/api/v1/webhooks").status_code in (401, 403)


@pytest.mark.django_db
def test_delivery_log_page_and_send_test_event(client) -> None:
    admin = UserFactory(username="admin", is_staff=True)
    client.force_login(admin)
    hook = Webhook.objects.create(agent=AgentFactory(name="<b>bot</b>"), url="https://example.com/<hook>")
    page = client.get("/webhooks/")
    assert page.status_code == 200 and b"&lt;b&gt;bot&lt;/b&gt;" in page.content and b"<b>bot" not in page.content
    response = client.post(f"/webhooks/{hook.pk}/test")
    assert response.status_code == 302
    log = client.get(f"/webhooks/{hook.pk}/")
    assert b"webhook.test" in log.content and b"not attempted yet" in log.content
    client.force_login(UserFactory(username="reviewer"))
    assert client.get(f"/webhooks/{hook.pk}/").status_code == 302  # to the admin login


@pytest.mark.django_db
def test_admin_send_test_event_action_and_url_check(client, settings) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    admin_user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    agent = AgentFactory(name="bot")
    hook = Webhook.objects.create(agent=agent, url="https://example.com/hook")
    response = client.post("/admin/hooks/webhook/", {"action": "send_test", "_selected_action": [hook.pk]}, follow=True)
    assert response.status_code == 200
    assert WebhookDelivery.objects.get(webhook=hook).event_type == "webhook.test"
    refused = client.post(
        "/admin/hooks/webhook/add/",
        {
            "agent": agent.pk,
            "url": "http://127.0.0.1/x",
            "secret": "whsec_0123456789abcdef",
            "events": '["step.decided"]',
            "enabled": "on",
        },
    )
    assert refused.status_code == 200 and b"loopback" in refused.content
    assert Webhook.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_escalation_is_delivered_as_item_escalated(private_ok, sync_tasks, receiver_factory) -> None:
    receiver = receiver_factory([200])
    agent = AgentFactory(name="hooked")
    Webhook.objects.create(agent=agent, url=receiver.url, events=["item.escalated"])
    alice = UserFactory(username="alice")
    seniors = QueueFactory(slug="seniors")
    queue = QueueFactory(slug="q", members=[alice], escalation_queue=seniors)
    item = ReviewItemFactory(queue=queue, step=StepFactory(agent=agent))
    claim_next_item(queue=queue, user=alice)
    submit_review(item_id=item.pk, user=alice, verdict="escalate", reason="not sure")
    (request,) = receiver.requests
    event = json.loads(request["body"])
    assert event["type"] == "item.escalated" and event["data"]["decision"]["status"] == "pending"
    assert event["data"]["item"]["queue"] == "q" and event["data"]["item"]["escalated_to"]["queue"] == "seniors"


def _sql_log(into: list[str]):
    def wrapper(execute, sql, params, many, context):
        into.append(sql)
        return execute(sql, params, many, context)

    return wrapper


@pytest.mark.django_db
@pytest.mark.parametrize("cause", ["decide", "escalate", "amend"])
@pytest.mark.parametrize("redis", [False, True], ids=["default-transport", "redis-transport"])
def test_webhook_events_are_recorded_in_the_transaction_that_causes_them(
    cause: str, redis: bool, on_postgres, settings, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    """A decision, an escalation and an amendment record their webhook event in their own
    transaction, on every database and transport: should the process die right after the commit
    (the on-commit callbacks never run), the event is stored and will be delivered. The wake-up
    is a NOTIFY in that transaction on PostgreSQL's transport, else `publish` after the commit;
    on PostgreSQL the webhooks are read in the decision's own batch."""
    published: list[tuple[int, str]] = []
    monkeypatch.setattr(notify, "publish", lambda step_id, event="decided": published.append((step_id, event)))
    if redis:
        settings.REDIS_URL = "redis://127.0.0.1:6379/15"  # `publish` is recorded above, not sent
    agent = AgentFactory(name="hooked")
    hook = Webhook.objects.create(
        agent=agent, url="https://example.com/hook", events=["step.decided", "item.escalated"]
    )
    alice = UserFactory(username="alice")
    queue = QueueFactory(slug="q", members=[alice], escalation_queue=QueueFactory(slug="seniors"))
    item = ReviewItemFactory(queue=queue, step=StepFactory(agent=agent))
    claim_next_item(queue=queue, user=alice)
    if cause == "amend":
        with django_capture_on_commit_callbacks(execute=True):
            review = submit_review(item_id=item.pk, user=alice, verdict="approve")
        WebhookDelivery.objects.all().delete()
        published.clear()
    in_transaction: list[str] = []
    after_commit: list[str] = []
    with django_capture_on_commit_callbacks() as callbacks, connection.execute_wrapper(_sql_log(in_transaction)):
        if cause == "decide":
            submit_review(item_id=item.pk, user=alice, verdict="approve")
        elif cause == "escalate":
            submit_review(item_id=item.pk, user=alice, verdict="escalate", reason="not sure")
        else:
            amend_review(review_id=review.pk, user=alice, verdict="reject", reason="wrong after all")
    event = "item.escalated" if cause == "escalate" else "step.decided"
    # The process could die here: the event is stored with the decision (or escalation).
    assert list(WebhookDelivery.objects.filter(webhook=hook).values_list("event_type", flat=True)) == [event]
    assert published == []
    with connection.execute_wrapper(_sql_log(after_commit)):
        for callback in callbacks:  # what runs after the commit
            callback()
    # After the commit only the delivery starts (a task for the django-q2 workers).
    assert not [sql for sql in after_commit if "hooks_webhook" in sql]
    wake = "escalated" if cause == "escalate" else "decided"
    if on_postgres and not redis:
        assert [sql for sql in in_transaction if "pg_notify" in sql] and published == []
    else:
        assert not [sql for sql in in_transaction + after_commit if "pg_notify" in sql]
        assert published == [(item.step_id, wake)]
    if on_postgres and cause == "decide":
        (batch,) = [sql for sql in in_transaction if "INSERT INTO review_decision" in sql]
        assert "FROM hooks_webhook" in batch
    assert list(WebhookDelivery.objects.filter(webhook=hook).values_list("event_type", flat=True)) == [event]


@pytest.mark.django_db
def test_an_escalation_rolled_back_leaves_no_webhook_event() -> None:
    agent = AgentFactory(name="hooked")
    Webhook.objects.create(agent=agent, url="https://example.com/hook", events=["item.escalated"])
    alice = UserFactory(username="alice")
    queue = QueueFactory(slug="q", members=[alice], escalation_queue=QueueFactory(slug="seniors"))
    item = ReviewItemFactory(queue=queue, step=StepFactory(agent=agent))
    claim_next_item(queue=queue, user=alice)
    with pytest.raises(RuntimeError), transaction.atomic():
        submit_review(item_id=item.pk, user=alice, verdict="escalate", reason="not sure")
        assert WebhookDelivery.objects.count() == 1  # recorded in the escalating transaction
        raise RuntimeError("the caller's transaction fails after the escalation")
    assert WebhookDelivery.objects.count() == 0
    item.refresh_from_db()
    assert item.status == "claimed"
