"""The agent-side Python client for reviewqueue.

A single module with no dependency on the rest of the project: copy it into an agent, or
`from reviewqueue.client import Client`. It needs `httpx` (preferred) or `requests`.

    from reviewqueue.client import Client, Rejected

    client = Client("https://review.example.com", api_key="rq_…")
    answer = client.submit({"external_id": "run-1-step-3", "kind": "final_answer", "output": "…", "confidence": 0.4})
    decision = client.wait_for_decision(answer.id, timeout=300)

    @client.review(queue_when=lambda args: args["amount_eur"] > 100)
    def refund(order_id: str, amount_eur: float) -> dict: ...

    refund("A123", 250)   # submitted; blocks for a human when routed to review; runs with the
                          # approved or corrected arguments; raises Rejected on rejection

Requests are retried with exponential backoff on connection errors and 502/503/504/429;
steps are idempotent through their `external_id`, so a retried POST never stores twice.
"""

from __future__ import annotations

import functools
import inspect
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

try:  # httpx first, requests as the fallback
    import httpx as _httpx

    _requests = None
except ImportError:  # pragma: no cover - exercised only where httpx is missing
    _httpx = None
    import requests as _requests

__all__ = [
    "APIError",
    "Client",
    "Decision",
    "DecisionTimeout",
    "Rejected",
    "ReviewqueueError",
    "Submitted",
]

MAX_WAIT_PER_REQUEST = 60  # the server's limit for ?wait=
MAX_BATCH = 1000
RETRY_STATUSES = {429, 502, 503, 504}
DECIDED = {"auto_approved", "approved", "corrected", "rejected", "expired"}

F = TypeVar("F", bound=Callable[..., Any])


class ReviewqueueError(Exception):
    """Base class of the client's errors."""


class APIError(ReviewqueueError):
    """The server refused the request (4xx/5xx); `body` is its JSON answer when there is one."""

    def __init__(self, status_code: int, body: Any) -> None:
        self.status_code = status_code
        self.body = body
        detail = body.get("detail") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status_code}: {detail}")


@dataclass(frozen=True)
class Submitted:
    """The server's answer for one submitted step."""

    id: int
    external_id: str
    status: str  # "auto_approved" | "pending_review"
    queue: str | None = None
    rule: str | None = None
    created: bool = True

    @property
    def needs_review(self) -> bool:
        return self.status == "pending_review"


@dataclass(frozen=True)
class Decision:
    status: str  # pending | auto_approved | approved | corrected | rejected | expired
    output: Any = None
    reason: str = ""
    reviewer: str | None = None
    decided_at: str | None = None
    escalated: bool = False
    queue: str | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @property
    def approved(self) -> bool:
        """Approved as sent, or corrected (use `output`)."""
        return self.status in ("auto_approved", "approved", "corrected")

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Decision:
        return cls(
            status=body.get("status", "pending"),
            output=body.get("output"),
            reason=body.get("reason") or "",
            reviewer=body.get("reviewer"),
            decided_at=body.get("decided_at"),
            escalated=bool(body.get("escalated", False)),
            queue=body.get("queue"),
            raw=dict(body),
        )


class Rejected(ReviewqueueError):
    """A reviewer rejected the step (or its SLA ran out with the "reject" policy)."""

    def __init__(self, decision: Decision, step_id: int | None = None) -> None:
        self.decision = decision
        self.step_id = step_id
        why = f": {decision.reason}" if decision.reason else ""
        super().__init__(f"step {step_id} was {decision.status} by {decision.reviewer or 'the review policy'}{why}")


class DecisionTimeout(ReviewqueueError):
    """No decision within the time the caller was willing to wait."""

    def __init__(self, step_id: int, waited: float) -> None:
        self.step_id = step_id
        super().__init__(f"no decision on step {step_id} after {waited:.0f} s")


def tool_call_output(name: str, arguments: Mapping[str, Any], call_id: str = "") -> dict[str, Any]:
    """A proposed tool call in the form reviewers approve or correct (an assistant message)."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(dict(arguments), default=str)},
            }
        ],
    }


def arguments_from_output(output: Any) -> dict[str, Any] | None:
    """The tool arguments in a decision's output: an assistant `tool_calls` message (arguments as
    a JSON string or an object), `{"arguments": {...}}`, or a plain object of arguments."""
    if isinstance(output, str):
        try:
            output = json.loads(output)
        except ValueError:
            return None
    if not isinstance(output, dict):
        return None
    calls = output.get("tool_calls")
    if isinstance(calls, list) and calls:
        function = calls[0].get("function", {}) if isinstance(calls[0], dict) else {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        return arguments if isinstance(arguments, dict) else None
    if isinstance(output.get("arguments"), dict):
        return output["arguments"]
    if "role" in output:
        return None
    return output


class Client:
    """`Client(url, api_key)`: the agent API of one reviewqueue server."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        trace_id: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.trace_id = trace_id
        self.headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        if _httpx is not None:
            self._session: Any = _httpx.Client(headers=self.headers, follow_redirects=False)
        else:  # pragma: no cover
            self._session = _requests.Session()
            self._session.headers.update(self.headers)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- HTTP with retries ------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, json_body: Any = None, params: dict | None = None, timeout: float
    ) -> Any:
        connection_errors: tuple[type[BaseException], ...] = (
            (_httpx.TransportError,) if _httpx is not None else (_requests.ConnectionError, _requests.Timeout)
        )
        for attempt in range(self.retries + 1):
            try:
                response = self._session.request(
                    method, self.url + path, json=json_body, params=params, timeout=timeout
                )
            except connection_errors:
                if attempt == self.retries:
                    raise
                self._sleep(attempt)
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                self._sleep(attempt, response.headers.get("Retry-After"))
                continue
            try:
                body = response.json()
            except ValueError:
                body = response.text
            if response.status_code >= 400:
                raise APIError(response.status_code, body)
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.backoff * (2**attempt) * (0.5 + random.random())
        if retry_after and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(min(delay, 30.0))

    # --- steps --------------------------------------------------------------------------------------

    def _step(self, step: Mapping[str, Any]) -> dict[str, Any]:
        body = dict(step)
        body.setdefault("external_id", str(uuid.uuid4()))
        if self.trace_id and "trace_id" not in body:
            body["trace_id"] = self.trace_id
        return body

    def submit(self, step: Mapping[str, Any] | None = None, **fields: Any) -> Submitted:
        """Send one step (a dict with the fields of POST /api/v1/steps, or keyword arguments).
        Without an `external_id` one is generated, so retries of this call stay idempotent."""
        body = self._step({**(step or {}), **fields})
        answer = self._request("POST", "/api/v1/steps", json_body=body, timeout=self.timeout)
        return Submitted(**{k: answer.get(k) for k in Submitted.__dataclass_fields__})

    def submit_many(self, steps: Iterable[Mapping[str, Any]]) -> list[Submitted]:
        """Send steps in batches of up to 1000 (each batch is all-or-nothing on the server)."""
        bodies = [self._step(s) for s in steps]
        results: list[Submitted] = []
        for start in range(0, len(bodies), MAX_BATCH):
            answer = self._request(
                "POST", "/api/v1/steps", json_body={"steps": bodies[start : start + MAX_BATCH]}, timeout=self.timeout
            )
            results.extend(Submitted(**{k: a.get(k) for k in Submitted.__dataclass_fields__}) for a in answer["steps"])
        return results

    def step(self, step_id: int) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/steps/{step_id}", timeout=self.timeout)

    def decision(self, step_id: int) -> Decision:
        """The current decision, without waiting."""
        return Decision.from_json(self._request("GET", f"/api/v1/steps/{step_id}/decision", timeout=self.timeout))

    def wait_for_decision(self, step_id: int, timeout: float | None = None) -> Decision:
        """Block until the step is decided (long-polls of up to 60 s each, so no busy loop), or
        `timeout` seconds have passed (None: wait for as long as it takes). Returns the decision,
        which is still `pending` when the timeout ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = MAX_WAIT_PER_REQUEST if deadline is None else deadline - time.monotonic()
            wait = max(0, min(MAX_WAIT_PER_REQUEST, int(remaining)))
            body = self._request(
                "GET",
                f"/api/v1/steps/{step_id}/decision",
                params={"wait": wait},
                timeout=wait + self.timeout,
            )
            decision = Decision.from_json(body)
            if not decision.pending or wait == 0:
                return decision

    # --- the decorator ----------------------------------------------------------------------------

    def review(
        self,
        queue_when: Callable[[dict[str, Any]], bool] | None = None,
        *,
        name: str | None = None,
        confidence: float | Callable[[dict[str, Any]], float | None] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Wrap a tool function: each call is submitted as a `tool_call` step (its arguments as
        the proposed call). When `queue_when(arguments)` is true (always, without it), the step
        is sent as blocking with `metadata.review_requested = true` for your routing rules; if
        the server routes it to review, the call blocks until the decision, then the tool runs
        with the approved or corrected arguments, or `Rejected` is raised. `DecisionTimeout` when
        `timeout` seconds pass without a decision. Auto-approved calls run at once."""

        def decorate(fn: F) -> F:
            signature = inspect.signature(fn)
            tool_name = name or fn.__name__

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                requested = bool(queue_when(arguments)) if queue_when is not None else True
                score = confidence(arguments) if callable(confidence) else confidence
                call_id = f"call_{uuid.uuid4().hex[:16]}"
                answer = self.submit(
                    external_id=f"{tool_name}-{uuid.uuid4()}",
                    kind="tool_call",
                    name=tool_name,
                    output=tool_call_output(tool_name, arguments, call_id),
                    confidence=score,
                    metadata={**(metadata or {}), "review_requested": requested},
                    blocking=requested,
                )
                if not answer.needs_review:
                    return fn(**arguments)
                decision = self.wait_for_decision(answer.id, timeout=timeout)
                if decision.pending:
                    raise DecisionTimeout(answer.id, timeout or 0)
                if not decision.approved:
                    raise Rejected(decision, answer.id)
                if decision.status == "corrected":
                    corrected = arguments_from_output(decision.output)
                    if corrected is None:
                        raise ReviewqueueError(
                            f"step {answer.id} was corrected, but its output holds no tool arguments: "
                            f"{decision.output!r}"
                        )
                    return fn(**corrected)
                return fn(**arguments)

            wrapper.reviewqueue_client = self  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate
