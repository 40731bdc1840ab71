"""Figures 6 and 7: the agent's side of the loop.

6. 1,000 agents long-polling `GET /api/v1/steps/{id}/decision?wait=60` at once on ONE ASGI
   server process (gunicorn + uvicorn worker); a reviewer decides their steps one after the
   other (through the review services, in this process); the time from each decision's commit
   to its agent's answer (p50/p95), and the server process's memory and threads while the
   1,000 wait, beside the same process idle.
7. OTLP ingestion (`POST /v1/traces`, protobuf) of traces of 20 spans (1 agent, 9 chat, 8 tool
   and 2 HTTP spans, the HTTP ones dropped), 25 traces per request, beside the REST batch path
   (`POST /api/v1/steps`) sending the same steps in the same run, on the WSGI server of figures 1-4.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from pathlib import Path

from bench.client import HttpClient, Samples, percentile, run_connections
from bench.report import Figure

WAIT_QUEUE = "bench-wait"
WAIT_SECONDS = 60
SPANS_PER_TRACE = 20
TRACES_PER_REQUEST = 25


# --- figure 6: long-poll ---------------------------------------------------------------------------


def _proc_status(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = int(rest.split()[0])
    return values  # VmRSS in kB


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_until_idle(pid: int, *, quiet: float = 0.01, window: float = 0.3, limit: float = 30.0) -> None:
    """Until the process uses under `quiet` CPU seconds in a `window`: a waiter counts as
    registered before its first read of the decision, so right after the last registration
    the server is still working through up to 1,000 of those reads."""
    deadline = time.monotonic() + limit
    before = _cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = _cpu_seconds(pid)
        if now - before < quiet:
            return
        before = now


def create_waiting_steps(count: int) -> tuple[str, list[int]]:
    """`count` blocking steps pending review in WAIT_QUEUE, an agent key, a reviewer."""
    from django.contrib.auth import get_user_model

    from bench.ingest import create_api_key
    from reviewqueue.core.models import Agent, Step
    from reviewqueue.review.models import Queue, ReviewItem

    key = create_api_key("bench-waiter")
    agent = Agent.objects.get(name="bench-waiter")
    reviewer, _ = get_user_model().objects.get_or_create(username="bench-decider")
    queue, _ = Queue.objects.get_or_create(slug=WAIT_QUEUE, defaults={"name": "Bench wait"})
    queue.members.add(reviewer)
    steps = Step.objects.bulk_create(
        [
            Step(
                agent=agent,
                external_id=f"wait-{n}",
                kind="tool_call",
                name="issue_refund",
                output={"role": "assistant", "content": None, "tool_calls": []},
                blocking=True,
                status="pending_review",
            )
            for n in range(count)
        ]
    )
    ReviewItem.objects.bulk_create([ReviewItem(queue=queue, step=s, blocking=True) for s in steps])
    Step.objects.create(agent=agent, external_id="decided", status="auto_approved", output="ok")
    return key, [s.pk for s in steps]


async def _long_poll(port: int, path: str, key: str, arrivals: dict[int, float], step_id: int) -> tuple[int, dict]:
    """What an agent does: long-poll until the answer is not `pending` (the server answers
    `pending` after `wait` seconds; the agent asks again, as the client does)."""
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            status = int(lines[0].split()[1])
            length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
            body = json.loads(await reader.readexactly(length))
        finally:
            writer.close()
        if status != 200 or body.get("status") != "pending":
            arrivals[step_id] = time.perf_counter()
            return status, body


def figure_long_poll(database_url: str, *, waiters: int) -> list[Figure]:
    from django.db import transaction

    from bench.server import Gunicorn
    from reviewqueue.review.models import Queue
    from reviewqueue.review.services import claim_next_item, submit_review

    key, step_ids = create_waiting_steps(waiters)
    with Gunicorn(database_url=database_url, workers=1, asgi=True) as server:
        port = server.port
        http = HttpClient(port, {"Authorization": f"Bearer {key}"})
        info = http.request("GET", "/bench/waiters").json()
        pid = info["pid"]
        # Baseline: the same endpoint answering at once (a decided step, wait=0), and the idle process.
        decided_id = step_ids[-1] + 1
        plain = Samples()
        for _ in range(300):
            plain.add(http.request("GET", f"/api/v1/steps/{decided_id}/decision?wait=0"), expected=(200,))
        idle = _proc_status(pid)

        loop = asyncio.new_event_loop()
        arrivals: dict[int, float] = {}
        results: dict[int, tuple[int, dict]] = {}

        async def run_all() -> None:
            tasks = {
                sid: asyncio.ensure_future(
                    _long_poll(port, f"/api/v1/steps/{sid}/decision?wait={WAIT_SECONDS}", key, arrivals, sid)
                )
                for sid in step_ids
            }
            for sid, task in tasks.items():
                try:
                    results[sid] = await task
                except Exception as error:  # counted below as an error
                    results[sid] = (0, {"error": repr(error)})

        thread = threading.Thread(target=loop.run_until_complete, args=(run_all(),), daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        waiting = 0
        while time.monotonic() < deadline:
            waiting = http.request("GET", "/bench/waiters").json()["waiting"]
            if waiting >= waiters:
                break
            time.sleep(0.2)
        _wait_until_idle(pid)  # every agent is now blocked on its event, none still reading
        busy = _proc_status(pid)
        registered = http.request("GET", "/bench/waiters").json()["waiting"]

        queue = Queue.objects.get(slug=WAIT_QUEUE)
        from django.contrib.auth import get_user_model

        reviewer = get_user_model().objects.get(username="bench-decider")
        decided_at: dict[int, float] = {}
        started = time.perf_counter()
        for _ in step_ids:
            item = claim_next_item(queue=queue, user=reviewer)
            if item is None:
                break
            with transaction.atomic():
                # Runs at the commit, just before the review's own on-commit NOTIFY.
                transaction.on_commit(lambda sid=item.step_id: decided_at.__setitem__(sid, time.perf_counter()))
                submit_review(item_id=item.pk, user=reviewer, verdict="approve")
        decide_seconds = time.perf_counter() - started
        thread.join(timeout=2 * WAIT_SECONDS + 30)
        loop.close()
        http.close()

    order = sorted(decided_at, key=decided_at.get)
    latencies = [(arrivals[s] - decided_at[s]) * 1000 for s in order if s in arrivals]
    tenth = max(1, len(latencies) // 10)
    by_decile = [round(percentile(latencies[i : i + tenth], 95), 1) for i in range(0, len(latencies), tenth)]
    approved = sum(1 for status, body in results.values() if status == 200 and body.get("status") == "approved")
    early = sum(1 for s in step_ids if s in arrivals and s in decided_at and arrivals[s] < decided_at[s])
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    base = plain.summary()
    ok = approved == waiters and registered >= waiters
    detail = {
        "waiters": waiters,
        "registered_in_server": registered,
        "answered_approved": approved,
        "answers_before_commit": early,
        "decisions_per_second": len(decided_at) / decide_seconds if decide_seconds else None,
        "latency_ms": {"p50": p50, "p95": p95, "p99": percentile(latencies, 99), "max": max(latencies, default=None)},
        "p95_ms_by_tenth_of_the_decisions": by_decile,
        "server_idle": idle,
        "server_waiting": busy,
        "plain_decision_get": base,
    }
    rss_idle, rss_busy = idle.get("VmRSS", 0) / 1024, busy.get("VmRSS", 0) / 1024
    return [
        Figure(
            "6a",
            f"decision -> waiting agent's answer p50 ({waiters} waiting, 1 ASGI process)",
            p50,
            "ms",
            "plain GET decision (wait=0) p50",
            base["client_p50_ms"],
            "(info)",
            None if ok else False,
            detail,
        ),
        Figure(
            "6b",
            "decision -> waiting agent's answer p95",
            p95,
            "ms",
            "plain GET decision (wait=0) p95",
            base["client_p95_ms"],
            "p95 < 200 ms",
            ok and p95 < 200,
        ),
        Figure(
            "6c",
            f"server RSS with {waiters} agents waiting",
            rss_busy,
            "MiB",
            "same process idle",
            rss_idle,
            "(info)",
            None,
            {"per_waiter_kib": (rss_busy - rss_idle) * 1024 / waiters if waiters else None},
        ),
        Figure(
            "6d",
            f"server threads with {waiters} agents waiting",
            float(busy.get("Threads", 0)),
            "threads",
            "same process idle",
            float(idle.get("Threads", 0)),
            "no thread per waiter",
            busy.get("Threads", 0) < idle.get("Threads", 0) + 50,
        ),
    ]


# --- figure 7: OTLP vs REST batch ----------------------------------------------------------------


def _kv(key: str, value: object) -> object:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    if isinstance(value, bool):
        any_value = AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = AnyValue(double_value=value)
    else:
        any_value = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=any_value)


def make_otlp_requests(tag: str, traces: int, seed: int) -> list[bytes]:
    """Protobuf ExportTraceServiceRequests of TRACES_PER_REQUEST traces of 20 spans each."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    rng = random.Random(seed)
    bodies = []
    for start in range(0, traces, TRACES_PER_REQUEST):
        spans = []
        for t in range(start, min(traces, start + TRACES_PER_REQUEST)):
            trace_id = rng.getrandbits(128).to_bytes(16, "big")
            root = rng.getrandbits(64).to_bytes(8, "big")
            order = f"A{rng.randrange(10_000, 99_999)}"
            question = json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"Where is {order}?"}]}])
            spans.append(
                Span(
                    trace_id=trace_id,
                    span_id=root,
                    name="invoke_agent support-bot",
                    kind=Span.SPAN_KIND_INTERNAL,
                    start_time_unix_nano=1_700_000_000_000_000_000,
                    end_time_unix_nano=1_700_000_001_000_000_000,
                    attributes=[
                        _kv("gen_ai.operation.name", "invoke_agent"),
                        _kv("gen_ai.agent.name", "support-bot"),
                        _kv("gen_ai.conversation.id", f"{tag}-conv-{t}"),
                        _kv("gen_ai.input.messages", question),
                        _kv(
                            "gen_ai.output.messages",
                            json.dumps(
                                [{"role": "assistant", "parts": [{"type": "text", "content": f"{order} shipped."}]}]
                            ),
                        ),
                        _kv("reviewqueue.confidence", round(rng.random(), 3)),
                    ],
                )
            )
            for n in range(SPANS_PER_TRACE - 1):
                span_id = rng.getrandbits(64).to_bytes(8, "big")
                common = {"trace_id": trace_id, "span_id": span_id, "parent_span_id": root}
                times = {
                    "start_time_unix_nano": 1_700_000_000_100_000_000,
                    "end_time_unix_nano": 1_700_000_000_200_000_000,
                }
                if n >= SPANS_PER_TRACE - 3:  # two HTTP spans: dropped
                    attrs = [_kv("http.request.method", "GET"), _kv("url.full", f"https://shop.example/orders/{order}")]
                    spans.append(
                        Span(name="GET /orders", kind=Span.SPAN_KIND_CLIENT, attributes=attrs, **common, **times)
                    )
                elif n % 2 == 0:
                    attrs = [
                        _kv("gen_ai.operation.name", "chat"),
                        _kv("gen_ai.request.model", "gpt-4o-mini"),
                        _kv("gen_ai.provider.name", "openai"),
                        _kv("gen_ai.input.messages", question),
                        _kv(
                            "gen_ai.output.messages",
                            json.dumps(
                                [
                                    {
                                        "role": "assistant",
                                        "parts": [
                                            {
                                                "type": "tool_call",
                                                "id": f"call_{n}",
                                                "name": "get_order",
                                                "arguments": {"order_id": order},
                                            }
                                        ],
                                    }
                                ]
                            ),
                        ),
                        _kv("gen_ai.usage.input_tokens", rng.randrange(50, 900)),
                        _kv("reviewqueue.confidence", round(rng.random(), 3)),
                    ]
                    spans.append(
                        Span(name="chat gpt-4o-mini", kind=Span.SPAN_KIND_CLIENT, attributes=attrs, **common, **times)
                    )
                else:
                    attrs = [
                        _kv("gen_ai.operation.name", "execute_tool"),
                        _kv("gen_ai.tool.name", "get_order"),
                        _kv("gen_ai.tool.call.id", f"call_{n - 1}"),
                        _kv("gen_ai.tool.call.arguments", json.dumps({"order_id": order})),
                        _kv("gen_ai.tool.call.result", json.dumps({"status": "shipped", "eta": "Friday"})),
                        _kv("reviewqueue.confidence", round(rng.random(), 3)),
                    ]
                    spans.append(Span(name="execute_tool get_order", attributes=attrs, **common, **times))
        resource = Resource(attributes=[_kv("service.name", "support-bot"), _kv("service.version", "1.4.2")])
        request = ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
        )
        bodies.append(request.SerializeToString())
    return bodies


def _post_all(
    port: int, path: str, bodies: list[bytes], headers: dict[str, str], connections: int
) -> tuple[float, Samples]:
    lock = threading.Lock()
    pending = list(reversed(bodies))

    def worker(mine: Samples) -> None:
        client = HttpClient(port, headers)
        while True:
            with lock:
                if not pending:
                    break
                body = pending.pop()
            mine.add(client.request("POST", path, body), expected=(200, 201))
        client.close()

    return run_connections(connections, worker)


def figure_otlp(port: int, *, traces: int, connections: int) -> list[Figure]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from bench.ingest import create_api_key
    from reviewqueue.core.models import Step
    from reviewqueue.core.otlp import map_spans

    otlp_key = create_api_key("bench-otlp")
    rest_key = create_api_key("bench-otlp-rest")
    otlp_bodies = make_otlp_requests("otlp", traces, seed=5)
    # The REST baseline sends the very same steps (mapped from an equal set of spans, other ids).
    rest_bodies = []
    for body in make_otlp_requests("rest", traces, seed=6):
        payloads = map_spans(ExportTraceServiceRequest.FromString(body)).payloads
        rest_bodies.append(json.dumps({"steps": payloads}).encode())
    # Warm-up, not measured.
    warm = make_otlp_requests("warm", 2 * TRACES_PER_REQUEST, seed=7)
    _post_all(
        port, "/v1/traces", warm, {"Authorization": f"Bearer {otlp_key}", "Content-Type": "application/x-protobuf"}, 2
    )

    spans = traces * SPANS_PER_TRACE
    steps_per_trace = SPANS_PER_TRACE - 2
    # Interleaved in 4 rounds (REST part, then OTLP part), so noise from other processes on the
    # machine hits both paths alike.
    rest_headers = {"Authorization": f"Bearer {rest_key}", "Content-Type": "application/json"}
    otlp_headers = {"Authorization": f"Bearer {otlp_key}", "Content-Type": "application/x-protobuf"}
    rounds = 4
    rest_wall = otlp_wall = 0.0
    rest_samples, otlp_samples = Samples(), Samples()
    for r in range(rounds):
        wall, samples = _post_all(port, "/api/v1/steps", rest_bodies[r::rounds], rest_headers, connections)
        rest_wall += wall
        rest_samples.extend(samples)
        wall, samples = _post_all(port, "/v1/traces", otlp_bodies[r::rounds], otlp_headers, connections)
        otlp_wall += wall
        otlp_samples.extend(samples)
    stored = Step.objects.filter(agent__name="bench-otlp").count() - 2 * TRACES_PER_REQUEST * steps_per_trace
    rest_steps_per_s = traces * steps_per_trace / rest_wall
    otlp_spans_per_s = spans / otlp_wall
    otlp_steps_per_s = traces * steps_per_trace / otlp_wall
    ok = not otlp_samples.errors and not rest_samples.errors and stored == traces * steps_per_trace
    detail = {
        "traces": traces,
        "spans": spans,
        "spans_per_request": TRACES_PER_REQUEST * SPANS_PER_TRACE,
        "client_connections": connections,
        "steps_stored_from_otlp": stored,
        "otlp_per_request": otlp_samples.summary(),
        "rest_per_request": rest_samples.summary(),
        "otlp_bytes_per_request": sum(map(len, otlp_bodies)) / len(otlp_bodies),
        "rest_bytes_per_request": sum(map(len, rest_bodies)) / len(rest_bodies),
    }
    return [
        Figure(
            "7a",
            f"OTLP ingest, traces of {SPANS_PER_TRACE} spans, {TRACES_PER_REQUEST} traces/request",
            otlp_spans_per_s,
            "spans/s",
            "REST batch, same steps (steps/s)",
            rest_steps_per_s,
            ">= 5,000 spans/s",
            ok and otlp_spans_per_s >= 5000,
            detail,
        ),
        Figure(
            "7b",
            "OTLP steps stored per second / REST batch",
            otlp_steps_per_s / rest_steps_per_s,
            "x",
            "",
            float("nan"),
            "(info)",
            None if ok else False,
            {"otlp_steps_per_second": otlp_steps_per_s, "rest_steps_per_second": rest_steps_per_s},
        ),
    ]


def raise_open_files_limit() -> None:
    """1,000 concurrent connections need more than the usual 1,024 descriptors (inherited by the
    server process too)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 8192:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover
        pass
