"""A deliberately cheap HTTP client (http.client, pre-serialised bodies) and latency stats.

gunicorn's sync workers close the connection after every response; http.client reopens it
on the next request, so one HttpClient serves one benchmark thread for its whole run."""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    body: bytes
    elapsed_ms: float  # as seen by the client, connection setup included
    server_ms: float | None  # from Server-Timing (bench.middleware)
    queries: int | None  # from X-Bench-Queries
    headers: dict[str, str]

    def json(self) -> object:
        return json.loads(self.body)


class HttpClient:
    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.headers = headers or {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        all_headers = {**self.headers, **(headers or {})}
        start = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=all_headers)
            raw = self.conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # The server closed a kept-alive connection between requests: retry once, fresh.
            self.conn.close()
            start = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=all_headers)
                raw = self.conn.getresponse()
            except Exception:
                self.conn.close()
                raise
        except Exception:
            self.conn.close()  # leave the connection reusable for the caller's next attempt
            raise
        data = raw.read()
        elapsed_ms = (time.perf_counter() - start) * 1000
        if raw.will_close:
            self.conn.close()
        timing = raw.getheader("Server-Timing", "")
        server_ms = float(timing.split("dur=")[1]) if "dur=" in timing else None
        queries = raw.getheader("X-Bench-Queries")
        return Response(
            status=raw.status,
            body=data,
            elapsed_ms=elapsed_ms,
            server_ms=server_ms,
            queries=int(queries) if queries is not None else None,
            headers={k.lower(): v for k, v in raw.getheaders()},
        )

    def close(self) -> None:
        self.conn.close()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for an empty list."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Samples:
    """Latencies of one kind of request: client-side, server-side and queries per request."""

    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)

    def add(self, response: Response, expected: tuple[int, ...] = (200, 201)) -> None:
        if response.status not in expected:
            self.errors[response.status] = self.errors.get(response.status, 0) + 1
            return
        self.client_ms.append(response.elapsed_ms)
        if response.server_ms is not None:
            self.server_ms.append(response.server_ms)
        if response.queries is not None:
            self.queries.append(response.queries)

    def extend(self, other: Samples) -> None:
        self.client_ms += other.client_ms
        self.server_ms += other.server_ms
        self.queries += other.queries
        for status, count in other.errors.items():
            self.errors[status] = self.errors.get(status, 0) + count

    def summary(self) -> dict[str, float | int | dict]:
        return {
            "n": len(self.client_ms),
            "client_p50_ms": percentile(self.client_ms, 50),
            "client_p95_ms": percentile(self.client_ms, 95),
            "server_p50_ms": percentile(self.server_ms, 50),
            "server_p95_ms": percentile(self.server_ms, 95),
            "queries_p50": percentile([float(q) for q in self.queries], 50),
            "errors": {str(k): v for k, v in self.errors.items()},
        }


def run_connections(count: int, worker: Callable[[Samples], None]) -> tuple[float, Samples]:
    """Run `worker` on `count` threads, each with its own Samples; the wall time and all samples."""
    samples = [Samples() for _ in range(count)]
    threads = [threading.Thread(target=worker, args=(s,)) for s in samples]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    merged = Samples()
    for s in samples:
        merged.extend(s)
    return wall, merged
