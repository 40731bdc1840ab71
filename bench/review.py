"""Figure 3: claim + review over the API at depth 100,000, and the review fixtures figure 4 shares."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field

from django.db import connection

from bench.client import HttpClient, Samples, percentile
from bench.db import insert_rows
from bench.report import Figure

BIG_QUEUE = "bench-deep"
SMALL_QUEUE = "bench-shallow"
TRACE_LENGTH = 50
CSRF_SECRET = "benchcsrfsecret0123456789abcdefg"  # 32 chars: Django accepts it unmasked
LONG_TEXT = "The customer asks about a delayed parcel and a partial refund for a damaged item. " * 4


@dataclass
class ReviewFixtures:
    tokens: list[str]  # DRF tokens of the concurrent reviewers
    ui_cookie: str  # Cookie header of a logged-in reviewer for the htmx UI
    depth: int
    small_depth: int


def _insert_queue_items(*, agent_id: int, queue_id: int, prefix: str, count: int, with_traces: bool) -> None:
    """`count` pending steps, each with its review item; in traces of TRACE_LENGTH if asked."""
    from reviewqueue.core.models import Step, Trace
    from reviewqueue.review.models import ReviewItem

    now = "statement_timestamp() - interval '1 hour' + g * interval '1 millisecond'"
    trace_expr, trace_join, trace_params = "NULL", "", []
    if with_traces:
        insert_rows(
            Trace,
            count // TRACE_LENGTH + 1,
            {"agent_id": "%s", "external_id": "%s || '-t' || g", "created_at": "statement_timestamp()"},
            [agent_id, prefix],
        )
        trace_expr = "t.id"
        trace_join = (
            f"JOIN core_trace t ON t.agent_id = %s AND t.external_id = %s || '-t' || (1 + (g - 1) / {TRACE_LENGTH})"
        )
        trace_params = [agent_id, prefix]
    insert_rows(
        Step,
        count,
        {
            "agent_id": "%s",
            "external_id": "%s || '-' || g",
            "parent_external_id": f"CASE WHEN mod(g - 1, {TRACE_LENGTH}) = 0 THEN '' ELSE %s || '-' || (g - 1) END",
            "trace_id": trace_expr,
            "kind": "(ARRAY['llm', 'tool_call', 'llm', 'final_answer'])[1 + mod(g, 4)]",
            "name": "'gpt-4o-mini'",
            "input": f"jsonb_build_array(jsonb_build_object('role', 'system', 'content', '{LONG_TEXT}'), "
            "jsonb_build_object('role', 'user', 'content', 'Where is my order A' || g || '?'))",
            "output": "jsonb_build_object('role', 'assistant', 'content', 'Order A' || g || ' shipped yesterday.')",
            "confidence": "mod(g, 50) / 100.0",
            "metadata": """jsonb_build_object('env', 'prod', 'customer', jsonb_build_object('tier', 'pro'))""",
            "status": "'pending_review'",
            "created_at": now,
            "updated_at": now,
        },
        [agent_id, prefix, prefix],
        source=trace_join,
        source_params=trace_params,
    )
    insert_rows(
        ReviewItem,
        count,
        {
            "queue_id": "%s",
            "step_id": "s.id",
            "priority": "0",
            "status": "'pending'",
            "created_at": now,
        },
        [queue_id],
        source="JOIN core_step s ON s.agent_id = %s AND s.external_id = %s || '-' || g",
        source_params=[agent_id, prefix],
    )


def create_review_fixtures(*, depth: int, small_depth: int, reviewers: int) -> ReviewFixtures:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from reviewqueue.core.models import Agent
    from reviewqueue.review.models import Queue

    user_model = get_user_model()
    agent = Agent.objects.create(name="bench-review")
    big = Queue.objects.create(slug=BIG_QUEUE, name="Bench deep queue", lease_seconds=600)
    small = Queue.objects.create(slug=SMALL_QUEUE, name="Bench shallow queue", lease_seconds=600)
    users = [user_model.objects.create_user(f"bench-reviewer-{i}", password=None) for i in range(reviewers)]
    ui_user = user_model.objects.create_user("bench-ui-reviewer", password=None)
    big.members.add(*users, ui_user)
    small.members.add(*users)
    tokens = [Token.objects.create(user=user).key for user in users]

    _insert_queue_items(agent_id=agent.id, queue_id=big.id, prefix="deep", count=depth, with_traces=True)
    _insert_queue_items(agent_id=agent.id, queue_id=small.id, prefix="shallow", count=small_depth, with_traces=False)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # what autovacuum would have done on a live system

    client = Client()
    client.force_login(ui_user)
    cookie = f"sessionid={client.cookies['sessionid'].value}; csrftoken={CSRF_SECRET}"
    return ReviewFixtures(tokens=tokens, ui_cookie=cookie, depth=depth, small_depth=small_depth)


# --- figure 3: claim + review over the API ---------------------------------------------------------


@dataclass
class RoundTrips:
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    claim: Samples = field(default_factory=Samples)
    review: Samples = field(default_factory=Samples)
    empty: int = 0


APPROVE = json.dumps({"verdict": "approve"}).encode()


def claim_and_review(client: HttpClient, slug: str, trips: RoundTrips) -> bool:
    """One reviewer round trip; False when the queue had nothing left (204) or on an error."""
    claim = client.request("POST", f"/api/v1/queues/{slug}/claim", b"")
    if claim.status == 204:
        trips.empty += 1
        return False
    trips.claim.add(claim, expected=(200,))
    if claim.status != 200:
        return False
    item_id = claim.json()["id"]
    review = client.request("POST", f"/api/v1/items/{item_id}/reviews", APPROVE)
    trips.review.add(review, expected=(201,))
    if review.status != 201:
        return False
    trips.client_ms.append(claim.elapsed_ms + review.elapsed_ms)
    trips.server_ms.append((claim.server_ms or 0) + (review.server_ms or 0))
    return True


def bare_round_trip(client: HttpClient, slug: str, trips: RoundTrips) -> bool:
    """The baseline: the same two requests to the bare view."""
    first = client.request("POST", "/bench/bare", b"")
    second = client.request("POST", "/bench/bare", APPROVE)
    trips.claim.add(first)
    trips.review.add(second)
    trips.client_ms.append(first.elapsed_ms + second.elapsed_ms)
    trips.server_ms.append((first.server_ms or 0) + (second.server_ms or 0))
    return True


def run_reviewers(
    port: int, tokens: list[str], slug: str, seconds: float, *, think_ms: float = 0.0, step=claim_and_review
) -> RoundTrips:
    """One thread per reviewer token, looping `step` until `seconds` have passed. With
    `think_ms`, each reviewer pauses a random 0.5x..1.5x that long between round trips."""
    deadline = time.monotonic() + seconds
    per_thread = [RoundTrips() for _ in tokens]

    def worker(index: int, token: str, trips: RoundTrips) -> None:
        rng = random.Random(index)
        client = HttpClient(port, {"Authorization": f"Token {token}", "Content-Type": "application/json"})
        while time.monotonic() < deadline:
            if not step(client, slug, trips) and trips.empty:
                break
            if think_ms:
                time.sleep(think_ms * rng.uniform(0.5, 1.5) / 1000)
        client.close()

    threads = [
        threading.Thread(target=worker, args=(i, token, trips))
        for i, (token, trips) in enumerate(zip(tokens, per_thread, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = RoundTrips()
    for trips in per_thread:
        merged.client_ms += trips.client_ms
        merged.server_ms += trips.server_ms
        merged.claim.extend(trips.claim)
        merged.review.extend(trips.review)
        merged.empty += trips.empty
    return merged


def _trips_summary(trips: RoundTrips, seconds: float) -> dict:
    return {
        "round_trips": len(trips.client_ms),
        "round_trips_per_second": len(trips.client_ms) / seconds,
        "client_p50_ms": percentile(trips.client_ms, 50),
        "client_p95_ms": percentile(trips.client_ms, 95),
        "server_p50_ms": percentile(trips.server_ms, 50),
        "server_p95_ms": percentile(trips.server_ms, 95),
        "claim": trips.claim.summary(),
        "review": trips.review.summary(),
        "queue_emptied": trips.empty,
    }


def claim_at_depths(port: int, token: str, rounds: int) -> tuple[Samples, Samples]:
    """Claim latency in the shallow and the deep queue, one reviewer, interleaved."""
    client = HttpClient(port, {"Authorization": f"Token {token}", "Content-Type": "application/json"})
    shallow, deep = RoundTrips(), RoundTrips()
    for _ in range(5):  # warm-up
        claim_and_review(client, SMALL_QUEUE, RoundTrips())
        claim_and_review(client, BIG_QUEUE, RoundTrips())
    for _ in range(rounds):
        claim_and_review(client, SMALL_QUEUE, shallow)
        claim_and_review(client, BIG_QUEUE, deep)
    client.close()
    return shallow.claim, deep.claim


def figure_claim_review(
    port: int, fixtures: ReviewFixtures, *, seconds: float, depth_rounds: int, think_ms: float
) -> list[Figure]:
    """Paced: 8 reviewers with a short think time between round trips (the server is busy but
    not saturated, so latency is what a reviewer sees). Saturated: the same 8 with no pause at
    all, which measures capacity; on 2 cores its latency is mostly queueing, as its bare-view
    baseline shows."""
    n = len(fixtures.tokens)
    probe = HttpClient(port, {"Authorization": f"Token {fixtures.tokens[0]}"})
    answer = probe.request("POST", f"/api/v1/queues/{SMALL_QUEUE}/claim", b"")
    probe.close()
    if answer.status != 200:
        raise RuntimeError(f"POST /api/v1/queues/{SMALL_QUEUE}/claim answered {answer.status}")
    shallow, deep = claim_at_depths(port, fixtures.tokens[0], depth_rounds)
    paced_base = run_reviewers(port, fixtures.tokens, BIG_QUEUE, seconds / 2, think_ms=think_ms, step=bare_round_trip)
    paced = run_reviewers(port, fixtures.tokens, BIG_QUEUE, seconds, think_ms=think_ms)
    saturated_base = run_reviewers(port, fixtures.tokens, BIG_QUEUE, seconds / 4, step=bare_round_trip)
    saturated = run_reviewers(port, fixtures.tokens, BIG_QUEUE, seconds / 2)

    errors = {}
    for trips in (paced, saturated):
        for samples in (trips.claim, trips.review):
            for status, count in samples.errors.items():
                errors[status] = errors.get(status, 0) + count
    ok = not errors and not paced.empty and not saturated.empty
    detail = {
        "reviewers": n,
        "think_ms": think_ms,
        "paced": _trips_summary(paced, seconds),
        "paced_bare_view": _trips_summary(paced_base, seconds / 2),
        "saturated": _trips_summary(saturated, seconds / 2),
        "saturated_bare_view": _trips_summary(saturated_base, seconds / 4),
        "errors": errors,
    }
    shallow_p50, deep_p50 = percentile(shallow.server_ms, 50), percentile(deep.server_ms, 50)
    p50, p95 = percentile(paced.client_ms, 50), percentile(paced.client_ms, 95)
    return [
        Figure(
            "3a",
            f"claim+review round trip p50, {n} reviewers, {fixtures.depth:,} items",
            p50,
            "ms",
            "bare view x2",
            percentile(paced_base.client_ms, 50),
            "< 10 ms",
            ok and p50 < 10,
            detail,
        ),
        Figure(
            "3b",
            f"claim+review round trip p95, {n} reviewers",
            p95,
            "ms",
            "bare view x2",
            percentile(paced_base.client_ms, 95),
            "< 30 ms",
            ok and p95 < 30,
        ),
        Figure(
            "3c",
            "round trip p50, server time only",
            percentile(paced.server_ms, 50),
            "ms",
            "bare view x2",
            percentile(paced_base.server_ms, 50),
            "(info)",
            None,
        ),
        Figure(
            "3d",
            f"saturated ({n} reviewers, no pause): round trips/s",
            len(saturated.client_ms) / (seconds / 2),
            "/s",
            "bare view x2",
            len(saturated_base.client_ms) / (seconds / 4),
            "(info)",
            None,
        ),
        Figure(
            "3e",
            "saturated: round trip p50 (client)",
            percentile(saturated.client_ms, 50),
            "ms",
            "bare view x2",
            percentile(saturated_base.client_ms, 50),
            "(info)",
            None,
        ),
        Figure(
            "3f",
            f"claim p50 (server) at depth {fixtures.depth:,}",
            deep_p50,
            "ms",
            f"depth {fixtures.small_depth:,}",
            shallow_p50,
            "ratio <= 1.5",
            not shallow.errors and not deep.errors and deep_p50 / shallow_p50 <= 1.5,
            {"shallow": shallow.summary(), "deep": deep.summary(), "rounds": depth_rounds},
        ),
    ]
