"""The product as README's production section runs it: gunicorn with uvicorn (ASGI) workers, two
processes, psycopg's connection pool, PostgreSQL. An agent sends a blocking step and long-polls
its decision over HTTP while a reviewer claims and corrects it (through either worker process)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from reviewqueue.core.models import ApiKey
from tests.factories import AgentFactory, QueueFactory, RoutingRuleFactory, UserFactory

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(port: int, method: str, path: str, *, auth: str, body: object = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}
    finally:
        conn.close()


@pytest.fixture
def server(transactional_db):
    db = connection.settings_dict
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{host}/{db['NAME']}"
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DB_POOL": "1",
        "DB_POOL_MAX_SIZE": "4",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SETTINGS_MODULE": "reviewqueue.settings",
    }
    env.pop("REDIS_URL", None)
    command = [
        *(sys.executable, "-m", "gunicorn", "reviewqueue.asgi:application"),
        *("--worker-class", "uvicorn_worker.UvicornWorker", "--workers", "2"),
        *("--bind", f"127.0.0.1:{port}", "--log-level", "warning"),
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not start: {process.stderr.read() if process.stderr else ''}")
                time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_an_agent_blocked_on_a_step_gets_the_correction_through_the_production_server(server) -> None:
    agent = AgentFactory(name="support-bot")
    key = ApiKey.issue(agent)[1]
    reviewer = UserFactory(username="rita")
    token = Token.objects.create(user=reviewer).key
    queue = QueueFactory(slug="refunds", members=[reviewer])
    low_confidence = [{"field": "confidence", "op": "lt", "value": 0.5}]
    RoutingRuleFactory(name="low confidence", queue=queue, conditions=low_confidence)
    agent_auth, reviewer_auth = f"Bearer {key}", f"Token {token}"

    status, step = _request(
        server,
        "POST",
        "/api/v1/steps",
        auth=agent_auth,
        body={
            "external_id": "run-1-step-1",
            "kind": "final_answer",
            "input": [{"role": "user", "content": "Refund my order?"}],
            "output": {"role": "assistant", "content": "Refund 40 EUR."},
            "confidence": 0.2,
            "blocking": True,
        },
    )
    assert status == 201 and step["status"] == "pending_review" and step["queue"] == "refunds"

    answers: list[tuple[int, dict, float]] = []

    def wait_for_decision() -> None:
        status, body = _request(server, "GET", f"/api/v1/steps/{step['id']}/decision?wait=30", auth=agent_auth)
        answers.append((status, body, time.monotonic()))

    waiter = threading.Thread(target=wait_for_decision)
    waiter.start()
    time.sleep(1.0)  # the agent is waiting (in one of the two worker processes)
    assert not answers

    status, item = _request(server, "POST", "/api/v1/queues/refunds/claim", auth=reviewer_auth)
    assert status == 200 and item["step"]["id"] == step["id"] and item["agent_waiting"] is True
    corrected = {"role": "assistant", "content": "Refund 20 EUR."}
    status, review = _request(
        server,
        "POST",
        f"/api/v1/items/{item['id']}/reviews",
        auth=reviewer_auth,
        body={"verdict": "correct", "output": corrected},
    )
    decided_at = time.monotonic()
    assert status == 201, review
    waiter.join(timeout=40)

    assert len(answers) == 1
    status, body, answered_at = answers[0]
    assert status == 200 and body["status"] == "corrected" and body["output"] == corrected
    assert answered_at - decided_at < 10  # woken by NOTIFY, not by the 30 s timeout
