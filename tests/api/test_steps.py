"""The agent steps API contract (DESIGN §4): POST/GET /api/v1/steps, /steps/{id}, /decision."""

from __future__ import annotations

import base64
import io
import json
import threading

import pytest
from django.db import connection
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from reviewqueue.api.middleware import RequestSizeLimitMiddleware
from reviewqueue.core.models import ApiKey, Attachment, Step
from reviewqueue.review.models import Decision
from tests.factories import AgentFactory, QueueFactory, RoutingRuleFactory, UserFactory, png_b64

pytestmark = pytest.mark.django_db
URL = "/api/v1/steps"


def step(external_id: str = "s1", **fields: object) -> dict:
    return {
        "external_id": external_id,
        "kind": "llm",
        "name": "gpt-4o",
        "input": [{"role": "user", "content": "hi"}],
        "output": {"role": "assistant", "content": "hello"},
        "confidence": 0.8,
        **fields,
    }


def white_png() -> str:
    return png_b64((32, 16), "white")


@pytest.fixture
def agent():
    return AgentFactory(name="support-bot")


@pytest.fixture
def api_key(agent):
    return ApiKey.issue(agent)


@pytest.fixture
def client(api_key) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
    return c


def post(client: APIClient, body: object):
    return client.post(URL, data=json.dumps(body), content_type="application/json")


# --- POST ---------------------------------------------------------------------------------------


def test_single_step_is_created(client, agent) -> None:
    response = post(client, step("one"))
    assert response.status_code == 201
    stored = Step.objects.get(agent=agent, external_id="one")
    assert response.json() == {
        "id": stored.pk,
        "external_id": "one",
        "status": "auto_approved",
        "queue": None,
        "rule": None,
        "created": True,
    }


def test_batch_answers_in_order(client) -> None:
    response = post(client, {"steps": [step(f"b{i}") for i in range(5)]})
    assert response.status_code == 201
    assert [a["external_id"] for a in response.json()["steps"]] == [f"b{i}" for i in range(5)]
    assert Step.objects.count() == 5


def test_routed_step_answers_its_queue_and_rule(client) -> None:
    RoutingRuleFactory(
        name="unsure", conditions=[{"field": "confidence", "op": "lt", "value": 0.5}], queue=QueueFactory(slug="triage")
    )
    response = post(client, {"steps": [step("low", confidence=0.1), step("high", confidence=0.9)]})
    assert response.status_code == 201
    low, high = response.json()["steps"]
    assert (low["status"], low["queue"], low["rule"]) == ("pending_review", "triage", "unsure")
    assert (high["status"], high["queue"], high["rule"]) == ("auto_approved", None, None)
    detail = client.get(f"{URL}/{low['id']}").json()
    assert detail["status"] == "pending_review" and detail["queue"] == "triage"
    assert detail["rule"]["name"] == "unsure" and detail["rule"]["matched"] == {"confidence": 0.1}
    assert detail["decision"]["status"] == "pending"


def test_replay_answers_200_with_the_same_id(client) -> None:
    first = post(client, step("r"))
    again = post(client, step("r", output="different"))
    assert again.status_code == 200
    assert again.json() == {**first.json(), "created": False}
    assert Step.objects.count() == 1
    batch = post(client, {"steps": [step("r")]})
    assert batch.status_code == 200 and batch.json()["steps"][0]["created"] is False


def assert_refused(response, status: int, field: str) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert field in body["detail"]
    assert not Step.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "llm", "output": "x"}, "external_id"),
        (step(confidence=1.01), "confidence"),
        (step(confidence=-1), "confidence"),
        (step(confidence="high"), "confidence"),
        (step(kind="thinking"), "kind"),
        (step(metadata="prod"), "metadata"),
        (step(metadata=[1, 2]), "metadata"),
        (step(blocking="true"), "blocking"),
        (step(surprise=1), "surprise"),
        (
            step(
                attachments=[
                    {"filename": "a.png", "content_type": "image/png", "data": base64.b64encode(b"<html>").decode()}
                ]
            ),
            "attachments",
        ),
        (
            step(
                attachments=[
                    {"filename": "a.svg", "content_type": "image/svg+xml", "data": base64.b64encode(b"<svg/>").decode()}
                ]
            ),
            "attachments",
        ),
        (step(attachments=[{"filename": "a.png", "data": "%%%not-base64"}]), "attachments"),
    ],
)
def test_bad_single_step_is_400_naming_the_field(client, body: dict, field: str) -> None:
    response = post(client, body)
    assert_refused(response, 400, field)
    assert field in response.json()["errors"]


def test_nan_confidence_is_400_naming_the_field(client) -> None:
    # Python's json.dumps writes NaN: it must be refused with the field named, not as a crash.
    raw = '{"external_id": "n", "confidence": NaN}'
    response = client.post(URL, data=raw, content_type="application/json")
    assert_refused(response, 400, "confidence")
    response = client.post(URL, data='{"external_id": "n", "output": {"v": Infinity}}', content_type="application/json")
    assert_refused(response, 400, "output")


def test_attachment_error_names_the_attachment(client) -> None:
    truncated = base64.b64decode(white_png())[:60]
    body = step(
        attachments=[
            {"filename": "ok.png", "data": white_png()},
            {"filename": "t.png", "data": base64.b64encode(truncated).decode()},
        ]
    )
    response = post(client, body)
    assert_refused(response, 400, "attachments[1].data: not a valid image")
    assert not Attachment.objects.exists()


def test_batch_with_one_bad_entry_stores_none_and_names_it(client) -> None:
    body = {"steps": [step("a"), step("b"), step("c"), step("d", confidence=7)]}
    response = post(client, body)
    assert_refused(response, 400, "steps[3].confidence")
    errors = response.json()["errors"]
    assert list(errors["steps"]) == ["3"] and "confidence" in errors["steps"]["3"]


def test_malformed_json_is_400(client) -> None:
    response = client.post(URL, data='{"external_id": "x",', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("malformed JSON: ")
    assert not Step.objects.exists()


def test_batch_over_the_limit_is_refused(client, settings) -> None:
    settings.MAX_BATCH_STEPS = 1000
    response = post(client, {"steps": [{"external_id": f"s{i}"} for i in range(1001)]})
    assert_refused(response, 400, "steps")
    assert "at most 1000" in response.json()["detail"]


@pytest.mark.parametrize(
    "body", [{"steps": []}, {"steps": {"external_id": "x"}}, {"steps": [step()], "extra": 1}, [step()]]
)
def test_bad_batch_shapes_are_400(client, body: object) -> None:
    response = post(client, body)
    assert response.status_code == 400 and response.json()["detail"]
    assert not Step.objects.exists()


SIZE_LIMIT_MIDDLEWARE = "reviewqueue.api.middleware.RequestSizeLimitMiddleware"


def test_body_over_the_limit_is_413(client, settings) -> None:
    if SIZE_LIMIT_MIDDLEWARE not in settings.MIDDLEWARE:  # until settings.py lists it
        settings.MIDDLEWARE = [settings.MIDDLEWARE[0], SIZE_LIMIT_MIDDLEWARE, *settings.MIDDLEWARE[1:]]
    settings.MAX_REQUEST_BYTES = 2000
    response = post(client, step(output="x" * 3000))
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
    assert not Step.objects.exists()


def test_chunked_body_over_the_limit_is_413(settings) -> None:
    settings.MAX_REQUEST_BYTES = 100
    seen = []
    middleware = RequestSizeLimitMiddleware(lambda request: seen.append(request.body) or None)

    def chunked(body: bytes):
        request = RequestFactory().post(URL, data=body, content_type="application/json")
        del request.META["CONTENT_LENGTH"]
        request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
        request._stream = io.BytesIO(body)
        return request

    assert middleware(chunked(b"x" * 101)).status_code == 413
    assert seen == []
    middleware(chunked(b'{"external_id": "a"}'))
    assert seen == [b'{"external_id": "a"}']


# --- authentication -----------------------------------------------------------------------------


def test_unauthenticated_is_401() -> None:
    response = APIClient().post(URL, data=json.dumps(step()), content_type="application/json")
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers
    assert not Step.objects.exists()


def test_unknown_key_is_401() -> None:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION="Bearer rq_not-a-real-key")
    response = post(c, step())
    assert response.status_code == 401 and "Invalid API key" in response.json()["detail"]


def test_revoked_key_is_401_and_says_so(client, api_key) -> None:
    key = api_key[0]
    key.revoked_at = timezone.now()
    key.save()
    response = post(client, step())
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert not Step.objects.exists()


def test_reviewer_token_is_refused_on_agent_endpoints() -> None:
    user = UserFactory(is_staff=True)
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    assert post(c, step()).status_code == 401
    c.force_login(user)
    assert c.get(URL).status_code in (401, 403)
    assert not Step.objects.exists()


def test_last_used_is_written_at_most_once_a_minute(client, api_key) -> None:
    post(client, step("a"))
    key = ApiKey.objects.get(pk=api_key[0].pk)
    first = key.last_used_at
    assert first is not None
    post(client, step("b"))
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=first - timezone.timedelta(minutes=2))
    post(client, step("c"))
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first


def test_key_lookup_loads_the_same_key_and_agent_as_the_orm(api_key) -> None:
    from reviewqueue.api.authentication import api_key_by_hash
    from reviewqueue.core.models import hash_api_key

    key, raw = api_key
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now(), name="ci")
    found = api_key_by_hash(hash_api_key(raw))
    expected = ApiKey.objects.select_related("agent").get(pk=key.pk)
    fields = [f.attname for f in ApiKey._meta.concrete_fields]
    assert [getattr(found, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert timezone.is_aware(found.last_used_at) and timezone.is_aware(found.created_at)
    agent_fields = [f.attname for f in found.agent._meta.concrete_fields]
    assert [getattr(found.agent, f) for f in agent_fields] == [getattr(expected.agent, f) for f in agent_fields]
    assert found._state.adding is False and found.agent._state.adding is False
    assert api_key_by_hash(hash_api_key(raw + "x")) is None


# --- GET ----------------------------------------------------------------------------------------


def test_list_is_cursor_paginated_and_filtered(client, agent) -> None:
    post(client, {"steps": [step(f"p{i}", trace_id="t1" if i % 2 else "t2") for i in range(7)]})
    other = AgentFactory(name="someone-else")
    Step.objects.create(agent=other, external_id="foreign")

    seen, url = [], f"{URL}?page_size=3"
    while url:
        page = client.get(url)
        assert page.status_code == 200
        body = page.json()
        assert len(body["results"]) <= 3
        seen += [s["external_id"] for s in body["results"]]
        url = body["next"]
    assert seen == [f"p{i}" for i in reversed(range(7))]  # newest first, no repeats, no foreign step

    t1 = client.get(URL, {"trace_id": "t1"}).json()["results"]
    assert sorted(s["external_id"] for s in t1) == ["p1", "p3", "p5"]
    assert client.get(URL, {"status": "pending_review"}).json()["results"] == []
    assert client.get(URL, {"status": "nonsense"}).status_code == 400


def test_detail_has_the_full_representation(client, agent) -> None:
    created = post(
        client,
        step(
            "d",
            trace_id="t",
            parent_id="p0",
            metadata={"env": "prod"},
            attachments=[{"filename": "s.png", "data": white_png()}],
        ),
    ).json()
    body = client.get(f"{URL}/{created['id']}").json()
    attachment = Attachment.objects.get()
    assert body["id"] == created["id"] and body["external_id"] == "d"
    assert (body["trace_id"], body["parent_id"], body["kind"], body["name"]) == ("t", "p0", "llm", "gpt-4o")
    assert body["input"] == [{"role": "user", "content": "hi"}] and body["metadata"] == {"env": "prod"}
    assert body["confidence"] == 0.8 and body["blocking"] is False and body["status"] == "auto_approved"
    assert body["queue"] is None and body["rule"] is None
    assert body["attachments"] == [
        {
            "id": attachment.pk,
            "filename": "s.png",
            "content_type": "image/png",
            "width": 32,
            "height": 16,
            "url": f"http://testserver/attachments/{attachment.pk}/",
            "thumbnail_url": f"http://testserver/attachments/{attachment.pk}/thumb/",
        }
    ]
    assert body["decision"]["status"] == "auto_approved" and body["decision"]["output"] == body["output"]
    assert body["created_at"]


def test_another_agents_step_is_404(client) -> None:
    foreign = Step.objects.create(agent=AgentFactory(name="other"), external_id="x")
    assert client.get(f"{URL}/{foreign.pk}").status_code == 404
    assert client.get(f"{URL}/{foreign.pk}/decision").status_code == 404
    assert client.get(f"{URL}/999999999").status_code == 404
    assert client.get(f"{URL}/99999999999999999999999999").status_code == 404  # beyond bigint


def test_decision_of_a_reviewed_step(client, agent) -> None:
    reviewer = UserFactory(username="alice")
    s = Step.objects.create(agent=agent, external_id="r", status="corrected", output="bad")
    Decision.objects.create(
        step=s, verdict="corrected", output="good", reason="typo", reviewer=reviewer, method="single"
    )
    body = client.get(f"{URL}/{s.pk}/decision").json()
    assert body["status"] == "corrected" and body["output"] == "good"
    assert body["reason"] == "typo" and body["reviewer"] == "alice" and body["decided_at"]
    pending = Step.objects.create(agent=agent, external_id="p", status="pending_review")
    assert client.get(f"{URL}/{pending.pk}/decision", {"wait": "0"}).json()["status"] == "pending"


@pytest.mark.parametrize("wait", ["-1", "61", "soon", "1.5"])
def test_decision_wait_is_validated(client, agent, wait: str) -> None:
    s = Step.objects.create(agent=agent, external_id="w")
    response = client.get(f"{URL}/{s.pk}/decision", {"wait": wait})
    assert response.status_code == 400 and "wait" in response.json()["detail"]


# --- concurrency (PostgreSQL) -------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_submissions_make_one_step(agent, api_key) -> None:
    body = json.dumps({"steps": [step(f"c{i}", trace_id="tc") for i in range(50)]})
    barrier = threading.Barrier(6)
    results: list[tuple[int, list]] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            c = APIClient()
            c.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
            barrier.wait()
            response = c.post(URL, data=body, content_type="application/json")
            results.append((response.status_code, response.json()["steps"]))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Step.objects.filter(agent=agent).count() == 50
    assert sorted(code for code, _ in results).count(201) >= 1
    ids = {tuple(a["id"] for a in answers) for _, answers in results}
    assert len(ids) == 1  # every request answers with the same ids
    created = [a["created"] for _, answers in results for a in answers]
    assert created.count(True) == 50  # each step reported as created exactly once


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_single_steps_of_a_new_trace(agent, api_key) -> None:
    """Each request inserts first; the ones that lose a race (the same step, or the same new
    trace) roll back and answer from what the winner stored."""
    root_step = step("root", trace_id="tn")
    bodies = [root_step] * 3 + [step(f"leaf{i}", trace_id="tn", parent_id="root") for i in range(3)]
    barrier = threading.Barrier(len(bodies))
    results: dict[str, list[tuple[int, dict]]] = {}
    errors: list[BaseException] = []

    def submit(body: dict) -> None:
        try:
            c = APIClient()
            c.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
            barrier.wait()
            response = c.post(URL, data=json.dumps(body), content_type="application/json")
            results.setdefault(body["external_id"], []).append((response.status_code, response.json()))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    roots = results["root"]
    assert sorted(code for code, _ in roots) == [200, 200, 201]
    assert len({answer["id"] for _, answer in roots}) == 1
    assert sum(answer["created"] for _, answer in roots) == 1
    stored = Step.objects.filter(agent=agent)
    assert stored.count() == 4 and len({s.trace_id for s in stored}) == 1
    root = stored.get(external_id="root")
    for leaf in stored.exclude(pk=root.pk):  # a leaf that ran before its root stored keeps only the name
        assert leaf.parent_id in (root.pk, None) and leaf.parent_external_id == "root"
