"""Figures 1 and 2: batch ingest throughput and single-step ingest latency over HTTP."""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

from django.core.management import CommandError, call_command
from django.db import transaction

from bench.client import HttpClient, Samples, run_connections
from bench.report import Figure

BATCH_SIZE = 500
STEPS_PER_TRACE = 10

TOOLS = ["search_orders", "get_customer", "refund_payment", "send_email"]
MODELS = ["gpt-4o-mini", "claude-3-5-sonnet"]
SYSTEM_PROMPT = (
    "You are the support agent of an online shop. Answer briefly, look orders up with the tools, "
    "never promise a refund above 100 EUR without a human."
)


# --- a realistic routing configuration: 5 rules, about 20% of steps routed ---------------------

ROUTING_RULES = [
    ("low-confidence", [{"field": "confidence", "op": "lt", "value": 0.12}], 1.0, "triage", 10),
    ("no-confidence", [{"field": "confidence", "op": "missing"}], 1.0, "triage", 5),
    (
        "risky-refunds",
        [{"field": "name", "op": "glob", "value": "refund_*"}, {"field": "confidence", "op": "lt", "value": 0.5}],
        1.0,
        "refunds",
        20,
    ),
    (
        "enterprise-answers",
        [
            {"field": "metadata.customer.tier", "op": "eq", "value": "enterprise"},
            {"field": "kind", "op": "eq", "value": "final_answer"},
        ],
        1.0,
        "enterprise",
        0,
    ),
    ("spot-check", [{"field": "confidence", "op": "gte", "value": 0.9}], 0.05, "spot-checks", 0),
]  # fmt: skip


def create_routing_config() -> None:
    """Queues and rules straight through the ORM (the models are the stable part)."""
    from reviewqueue.review.models import Queue
    from reviewqueue.routing.models import RoutingRule, RoutingRuleVersion

    for position, (name, conditions, sample_rate, queue_slug, priority) in enumerate(ROUTING_RULES):
        queue, _ = Queue.objects.get_or_create(slug=queue_slug, defaults={"name": queue_slug.title()})
        rule = RoutingRule.objects.create(
            name=name,
            position=position,
            conditions=conditions,
            sample_rate=sample_rate,
            action="route",
            queue=queue,
            priority=priority,
        )
        snapshot = {"name": name, "conditions": conditions, "sample_rate": sample_rate, "queue": queue_slug}
        RoutingRuleVersion.objects.create(rule=rule, rule_name=name, version=1, snapshot=snapshot)


# --- payloads ------------------------------------------------------------------------------------


def make_step(rng: random.Random, tag: str, index: int) -> dict:
    """One step as an agent would send it (about 700 bytes of JSON)."""
    kind = rng.choices(["llm", "tool_call", "final_answer", "retrieval"], weights=[50, 30, 10, 10])[0]
    order = f"A{rng.randrange(10_000, 99_999)}"
    if kind == "tool_call":
        name = rng.choice(TOOLS)
        step_input = {"arguments": {"order_id": order, "amount_eur": rng.randrange(5, 300)}}
        output = {"ok": True, "order_id": order, "status": rng.choice(["shipped", "refunded", "pending"])}
    elif kind == "retrieval":
        name = "kb-search"
        step_input = {"query": f"return policy for order {order}"}
        output = [{"doc": f"kb/{rng.randrange(1, 400)}", "score": round(rng.random(), 3)} for _ in range(3)]
    else:
        name = rng.choice(MODELS) if kind == "llm" else "support-agent"
        step_input = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Hi, where is my order {order}? It was due last week and I need it."},
        ]
        output = {"role": "assistant", "content": f"Your order {order} shipped yesterday and arrives on Friday."}
    confidence = None if rng.random() < 0.05 else round(rng.random(), 3)
    trace = index // STEPS_PER_TRACE
    step = {
        "external_id": f"{tag}-{index}",
        "trace_id": f"{tag}-t{trace}",
        "kind": kind,
        "name": name,
        "input": step_input,
        "output": output,
        "confidence": confidence,
        "metadata": {
            "env": "prod",
            "agent_version": "1.4.2",
            "customer": {
                "id": f"c{rng.randrange(1, 5000)}",
                "tier": rng.choices(["free", "pro", "enterprise"], [60, 30, 10])[0],
            },
        },
    }
    if index % STEPS_PER_TRACE:
        step["parent_id"] = f"{tag}-{index - 1}"
    return step


def make_batches(tag: str, total: int, seed: int = 7) -> list[list[dict]]:
    rng = random.Random(seed)
    steps = [make_step(rng, tag, i) for i in range(total)]
    return [steps[i : i + BATCH_SIZE] for i in range(0, total, BATCH_SIZE)]


def create_api_key(agent: str) -> str:
    """Through the public command (DESIGN §4): the key is alone on the last line."""
    out = io.StringIO()
    try:
        call_command("create_api_key", agent=agent, stdout=out)
    except CommandError as error:
        if "Unknown command" not in str(error):
            raise
        # The command has not landed yet: issue the key through the model instead.
        from reviewqueue.core.models import Agent, ApiKey

        print("bench: warning: no create_api_key command; issuing the key through ApiKey.issue", flush=True)
        return ApiKey.issue(Agent.objects.get_or_create(name=agent)[0])[1]
    return out.getvalue().strip().splitlines()[-1].strip()


# --- figure 1: batch ingest ------------------------------------------------------------------------


def bulk_create_baseline(batches: list[list[dict]], agent_name: str) -> float:
    """Steps per second for a raw bulk_create of the same rows, 500 per transaction.

    Traces are created beforehand and object construction is outside the timing, so the
    baseline is as fast as the ORM gets: the ratio is conservative."""
    from reviewqueue.core.models import Agent, Step, Trace

    agent = Agent.objects.create(name=agent_name)
    trace_ids = sorted({s["trace_id"] for batch in batches for s in batch})
    Trace.objects.bulk_create([Trace(agent=agent, external_id=t) for t in trace_ids], batch_size=2000)
    traces = dict(Trace.objects.filter(agent=agent).values_list("external_id", "id"))
    elapsed = 0.0
    rows = 0
    for batch in batches:
        objects = [
            Step(
                agent=agent,
                trace_id=traces[s["trace_id"]],
                external_id=s["external_id"],
                parent_external_id=s.get("parent_id", ""),
                kind=s["kind"],
                name=s["name"],
                input=s["input"],
                output=s["output"],
                confidence=s["confidence"],
                metadata=s["metadata"],
                status="auto_approved",
            )
            for s in batch
        ]
        start = time.perf_counter()
        with transaction.atomic():
            Step.objects.bulk_create(objects)
        elapsed += time.perf_counter() - start
        rows += len(objects)
    return rows / elapsed


@dataclass
class BatchRun:
    steps_per_second: float
    batch_samples: Samples
    statuses: Counter
    created: int


def http_batch_ingest(port: int, api_key: str, batches: list[list[dict]], concurrency: int) -> BatchRun:
    bodies = [json.dumps({"steps": batch}).encode() for batch in batches]
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    lock = threading.Lock()
    pending = list(reversed(bodies))
    answers: list[bytes] = []

    def worker(mine: Samples) -> None:
        client = HttpClient(port, headers)
        while True:
            with lock:
                if not pending:
                    break
                body = pending.pop()
            response = client.request("POST", "/api/v1/steps", body)
            mine.add(response, expected=(201,))
            with lock:
                answers.append(response.body if response.status == 201 else b"")
        client.close()

    wall, merged = run_connections(concurrency, worker)
    statuses: Counter = Counter()
    created = 0
    for body in answers:
        if not body:
            continue
        for answer in json.loads(body)["steps"]:
            statuses[answer["status"]] += 1
            created += bool(answer.get("created"))
    steps_ok = sum(len(b) for b in batches) - sum(merged.errors.values()) * BATCH_SIZE
    return BatchRun(steps_ok / wall, merged, statuses, created)


def figure_batch_ingest(port: int, *, total_steps: int, concurrency: int) -> list[Figure]:
    api_key = create_api_key("bench-batch")
    # Warm-up: two batches that are not measured (first use of each code path in each worker).
    http_batch_ingest(port, api_key, make_batches("warm", 2 * BATCH_SIZE, seed=1), concurrency=2)
    batches = make_batches("batch", total_steps)
    baseline = bulk_create_baseline(batches, "bench-bulk-create")
    run = http_batch_ingest(port, api_key, batches, concurrency)
    routed = run.statuses.get("pending_review", 0)
    answered = sum(run.statuses.values())
    detail = {
        "steps": total_steps,
        "batch_size": BATCH_SIZE,
        "client_connections": concurrency,
        "routed_fraction": routed / answered if answered else None,
        "statuses": dict(run.statuses),
        "created": run.created,
        "per_batch": run.batch_samples.summary(),
    }
    return [
        Figure(
            "1a",
            f"batch ingest, {BATCH_SIZE}/request, {concurrency} conns",
            run.steps_per_second,
            "steps/s",
            "bulk_create",
            baseline,
            ">= 5,000 steps/s",
            run.steps_per_second >= 5000 and not run.batch_samples.errors,
            detail,
        ),
        Figure(
            "1b",
            "batch ingest / raw bulk_create",
            run.steps_per_second / baseline,
            "x",
            "",
            float("nan"),
            ">= 0.40",
            run.steps_per_second / baseline >= 0.40 and not run.batch_samples.errors,
            {"bulk_create_steps_per_second": baseline},
        ),
    ]


# --- figure 2: single-step ingest ------------------------------------------------------------------


def figure_single_ingest(port: int, *, requests: int) -> list[Figure]:
    api_key = create_api_key("bench-single")
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    rng = random.Random(11)
    bodies = [json.dumps(make_step(rng, "single", i)).encode() for i in range(requests + 50)]
    client = HttpClient(port, headers)
    for body in bodies[:50]:  # warm-up
        client.request("POST", "/api/v1/steps", body)
        client.request("POST", "/bench/bare", body)
    step_samples, bare_samples = Samples(), Samples()
    # Interleaved, so noise from other processes on the machine hits both alike.
    for body in bodies[50:]:
        step_samples.add(client.request("POST", "/api/v1/steps", body), expected=(201,))
        bare_samples.add(client.request("POST", "/bench/bare", body), expected=(200,))
    client.close()
    step, bare = step_samples.summary(), bare_samples.summary()
    detail = {"requests": requests, "step": step, "bare_view": bare}
    ok = not step_samples.errors
    return [
        Figure(
            "2a",
            "single-step ingest p50 (client)",
            step["client_p50_ms"],
            "ms",
            "bare view",
            bare["client_p50_ms"],
            "< 5 ms",
            ok and step["client_p50_ms"] < 5,
            detail,
        ),
        Figure(
            "2b",
            "single-step ingest p95 (client)",
            step["client_p95_ms"],
            "ms",
            "bare view",
            bare["client_p95_ms"],
            "(info)",
            None,
        ),
        Figure(
            "2c",
            "single-step ingest p50 (server)",
            step["server_p50_ms"],
            "ms",
            "bare view",
            bare["server_p50_ms"],
            "(info)",
            None,
            {"queries_p50": step["queries_p50"]},
        ),
    ]
