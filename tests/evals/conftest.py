"""A small corpus of decided steps, made through the real ingest, routing and review services:
multi-turn context with tool calls and results, a corrected tool call (a DPO pair), a corrected
answer, a rejection, unicode, an empty and a huge output, a screenshot, PII, an auto-approved
step and an exact duplicate."""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Any

import pytest
from PIL import Image

from reviewqueue.core.ingest import ingest_steps
from reviewqueue.core.models import Step
from reviewqueue.review.models import ReviewItem
from reviewqueue.review.services import claim_next_item, submit_review
from tests.factories import AgentFactory, QueueFactory, RoutingRuleFactory, UserFactory

# Consumer libraries must never reach the network in tests.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "YES")
os.environ.setdefault("INSPECT_TELEMETRY", "false")

SYSTEM = "You are the Acme support agent. Use tools to look up orders before answering."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up an order by id.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "description": "Refund an order.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "amount_eur": {"type": "number"}},
                "required": ["order_id", "amount_eur"],
            },
        },
    },
]


def lookup_call(order: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_order_status", "arguments": json.dumps({"order_id": order})},
            }
        ],
    }


def context(order: str, question: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": question},
        lookup_call(order),
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"status": "shipped", "eta": "2026-11-27"})},
    ]


def refund_call(amount: float) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_2",
                "type": "function",
                "function": {
                    "name": "issue_refund",
                    "arguments": json.dumps({"order_id": "B77", "amount_eur": amount}),
                },
            }
        ],
    }


def png_b64() -> str:
    image = Image.new("RGB", (64, 48), "#2e7d32")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


HUGE = "Lorem ipsum dolor sit amet. " * 8000  # ~220 KB


def corpus_payloads() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []

    def add(ext: str, kind: str, inp: Any, out: Any, **extra: Any) -> None:
        steps.append({"external_id": ext, "kind": kind, "input": inp, "output": out, "confidence": 0.5, **extra})

    add(
        "answer-approved",
        "final_answer",
        {"messages": context("A123", "Where is my order A123?"), "tools": TOOLS},
        {"role": "assistant", "content": "Your order A123 has shipped and should arrive on 27 November."},
    )
    add(
        "refund-corrected",
        "tool_call",
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Refund order B77, the kettle was 39.90 EUR."},
            ],
            "tools": TOOLS,
        },
        refund_call(399.0),
    )
    add(
        "answer-corrected",
        "final_answer",
        context("A200", "Can I return shoes after 40 days?"),
        {"role": "assistant", "content": "Yes, any time."},
    )
    add(
        "answer-rejected",
        "final_answer",
        [{"role": "user", "content": "Is the jacket waterproof?"}],
        "It is made of paper.",
    )
    add(
        "unicode",
        "llm",
        [{"role": "user", "content": "Übersetze: 東京へようこそ — مرحبا 👋"}],
        {"role": "assistant", "content": "Willkommen in Tokio — أهلا 👋 «ça va?»"},
    )
    add("huge", "llm", [{"role": "user", "content": "Write a long text."}], HUGE)
    add("empty", "llm", [{"role": "user", "content": "Say nothing."}], "")
    add(
        "screenshot",
        "tool_call",
        [{"role": "user", "content": "Finish the checkout: click 'Pay now'."}],
        {"action": "click", "x": 540, "y": 365},
        attachments=[{"filename": "checkout.png", "content_type": "image/png", "data": png_b64()}],
    )
    add(
        "pii",
        "final_answer",
        [
            {
                "role": "user",
                "content": "I'm jane.doe@example.com, call me on +44 20 7946 0958. Key sk-abcdefghijklmnop1234",
            }
        ],
        {"role": "assistant", "content": "Charged card 4111 1111 1111 1111 for jane.doe@example.com."},
    )
    for n in range(8):
        add(f"plain-{n}", "llm", [{"role": "user", "content": f"What is {n} + {n}?"}], f"{n} + {n} = {2 * n}.")
    add("auto", "llm", [{"role": "user", "content": "Hello"}], "Hi! How can I help?", confidence=0.995)
    add(
        "answer-approved-dup",
        "final_answer",
        {"messages": context("A123", "Where is my order A123?"), "tools": TOOLS},
        {"role": "assistant", "content": "Your order A123 has shipped and should arrive on 27 November."},
    )
    return steps


DECISIONS: dict[str, tuple[str, Any, str]] = {
    "refund-corrected": ("correct", refund_call(39.9), "Refund is 39.90 EUR, not 399."),
    "answer-corrected": (
        "correct",
        {"role": "assistant", "content": "No: returns are accepted within 30 days of delivery."},
        "Policy is 30 days.",
    ),
    "answer-rejected": ("reject", None, "Nonsense answer."),
    "pii": (
        "correct",
        {"role": "assistant", "content": "Charged card 4111 1111 1111 1111. Mail: jane.doe@example.com"},
        "Keep the mail.",
    ),
}


@pytest.fixture
def corpus(db) -> dict[str, Step]:
    """Ingest the payloads (one queue takes everything but the confident one) and decide them."""
    reviewer = UserFactory(username="rev-ann")
    queue = QueueFactory(
        slug="support", members=[reviewer], rubric=[{"name": "tone", "type": "choice", "options": ["ok", "rude"]}]
    )
    RoutingRuleFactory(
        name="confident",
        position=1,
        action="auto_approve",
        queue=None,
        conditions=[{"field": "confidence", "op": "gte", "value": 0.99}],
    )
    RoutingRuleFactory(name="everything", position=2, action="route", queue=queue, conditions=[])
    agent = AgentFactory(name="support-bot")
    ingest_steps(agent=agent, payloads=corpus_payloads())
    steps = {s.external_id: s for s in Step.objects.filter(agent=agent)}
    assert steps["auto"].status == "auto_approved"
    for _ in range(ReviewItem.objects.filter(queue=queue).count()):
        item = claim_next_item(queue=queue, user=reviewer)
        verdict, output, reason = DECISIONS.get(item.step.external_id, ("approve", None, ""))
        labels = {"tone": "rude" if item.step.external_id == "answer-rejected" else "ok"}
        submit_review(item_id=item.pk, user=reviewer, verdict=verdict, output=output, reason=reason, labels=labels)
    for step in steps.values():
        step.refresh_from_db()
    return steps
