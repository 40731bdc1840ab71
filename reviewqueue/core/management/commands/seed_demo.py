"""Demo data: users, agents, queues and rules (docs/examples/reviewqueue.yaml) and a few hundred
realistic steps sent through the same ingest path as the API, so routing decides where they go."""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from PIL import Image, ImageDraw

from reviewqueue.core.ingest import ingest_steps
from reviewqueue.core.models import Agent

DEMO_CONFIG = Path(settings.BASE_DIR) / "docs" / "examples" / "reviewqueue.yaml"
DEMO_PASSWORD = "reviewqueue-demo"

USERS = [
    # username, is_staff
    ("admin", True),
    ("reviewer", False),
    ("reviewer2", False),
]

SUPPORT_SYSTEM = (
    "You are the Acme support agent. Be brief and friendly. Use tools to look up orders before "
    "answering; never promise refunds over 100 EUR without a human."
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up an order by id.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "pattern": "^A[0-9]{3,}$"}},
                "required": ["order_id"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "description": "Refund part or all of an order.",
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string"},
                    "amount_eur": {"type": "number", "exclusiveMinimum": 0, "maximum": 500},
                    "reason": {"type": "string", "enum": ["damaged", "late", "wrong_item", "goodwill"]},
                },
                "required": ["order_id", "amount_eur", "reason"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "cancel_order",
            "description": "Cancel an order that has not shipped yet.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
]

QUESTIONS = [
    ("Where is my order {order}?", "Your order {order} shipped on Monday and should arrive by Thursday."),
    ("Can I return shoes after 40 days?", "Returns are accepted within 30 days of delivery, so 40 days is too late."),
    ("My parcel {order} arrived damaged, what now?", "Sorry about that! I've started a refund for the damaged item."),
    ("Do you ship to Norway?", "Yes, we ship to Norway; delivery takes 3–5 working days and customs may apply."),
    (
        "How do I change my delivery address for {order}?",
        "Open *My orders*, pick {order} and choose **Change address** before it ships.",
    ),
    ("Is the blue jacket waterproof?", "Yes: the blue jacket is rated 10,000 mm waterproof with taped seams."),
    (
        "Why was I charged twice?",
        "The second charge is a pre-authorisation; it disappears within 5 days.\n\n"
        "```\nAUTH 49.90 EUR  pending\nCHARGE 49.90 EUR  settled\n```",
    ),
]


def screenshot_png(button_label: str, seed: int) -> bytes:
    """A small fake web page: header, a form and a few buttons, drawn with Pillow."""
    rnd = random.Random(seed)
    img = Image.new("RGB", (800, 500), "#f6f7f9")
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 800, 56], fill="#1f3a5f")
    draw.text((24, 20), "Acme Shop — Checkout", fill="white")
    draw.rectangle([40, 90, 760, 300], outline="#c9ced6", fill="white")
    for i, label in enumerate(["Name", "Address", "Card number"]):
        y = 110 + i * 60
        draw.text((60, y), label, fill="#333")
        draw.rectangle([200, y - 6, 720, y + 24], outline="#aab2bd")
    buttons = ["Back", "Apply coupon", button_label]
    for i, label in enumerate(buttons):
        x = 60 + i * 240 + rnd.randint(0, 10)
        draw.rounded_rectangle([x, 340, x + 200, 390], radius=8, fill="#2e7d32" if i == 2 else "#607d8b")
        draw.text((x + 20, 358), label, fill="white")
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def support_trace(rnd: random.Random, n: int) -> list[dict[str, Any]]:
    order = f"A{100 + n}"
    question, answer = rnd.choice(QUESTIONS)
    question, answer = question.format(order=order), answer.format(order=order)
    tier = rnd.choice(["standard"] * 8 + ["vip"])
    trace = f"support-{n:04d}"
    meta = {"customer": {"tier": tier, "country": rnd.choice(["DE", "FR", "NL", "NO"])}, "channel": "chat"}
    messages = [{"role": "system", "content": SUPPORT_SYSTEM}, {"role": "user", "content": question}]
    steps: list[dict[str, Any]] = []
    call_id = f"call_{n}_1"
    lookup = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "get_order_status", "arguments": json.dumps({"order_id": order})},
            }
        ],
    }
    steps.append(
        {
            "external_id": f"{trace}-1",
            "trace_id": trace,
            "kind": "tool_call",
            "name": "get_order_status",
            "input": {"messages": messages, "tools": TOOLS},
            "output": lookup,
            "confidence": round(rnd.uniform(0.85, 1.0), 3),
            "metadata": meta,
        }
    )
    result = {
        "role": "tool",
        "tool_call_id": call_id,
        "content": json.dumps({"status": "shipped", "eta": "2026-11-27", "total_eur": 89.9}),
    }
    messages = [*messages, lookup, result]
    if "damaged" in question or rnd.random() < 0.15:
        amount = rnd.choice([12.5, 49.9, 89.9, 250.0])
        refund = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{n}_2",
                    "type": "function",
                    "function": {
                        "name": "issue_refund",
                        "arguments": json.dumps({"order_id": order, "amount_eur": amount, "reason": "damaged"}),
                    },
                }
            ],
        }
        steps.append(
            {
                "external_id": f"{trace}-2",
                "trace_id": trace,
                "parent_id": f"{trace}-1",
                "kind": "tool_call",
                "name": "issue_refund",
                "input": {"messages": messages, "tools": TOOLS},
                "output": refund,
                "confidence": round(rnd.uniform(0.4, 0.95), 3),
                "metadata": meta,
                "blocking": True,
            }
        )
    steps.append(
        {
            "external_id": f"{trace}-3",
            "trace_id": trace,
            "parent_id": f"{trace}-1",
            "kind": "final_answer",
            "name": "gpt-4o-mini",
            "input": {"messages": messages},
            "output": {"role": "assistant", "content": answer},
            "confidence": round(rnd.betavariate(5, 2), 3),
            "metadata": meta,
        }
    )
    return steps


def browser_trace(rnd: random.Random, n: int, with_image: bool) -> list[dict[str, Any]]:
    trace = f"browser-{n:04d}"
    label = rnd.choice(["Pay now", "Place order", "Confirm"])
    x, y = 540 + rnd.randint(-40, 60), 365 + rnd.randint(-10, 10)
    step: dict[str, Any] = {
        "external_id": f"{trace}-1",
        "trace_id": trace,
        "kind": "tool_call",
        "name": "computer",
        "input": [{"role": "user", "content": f"Finish the checkout: click '{label}'."}],
        "output": {"action": "click", "x": x, "y": y},
        "confidence": round(rnd.uniform(0.3, 0.99), 3),
        "metadata": {"environment": "browser", "url": "https://shop.example/checkout"},
    }
    if with_image:
        step["attachments"] = [
            {
                "filename": f"checkout-{n}.png",
                "content_type": "image/png",
                "data": base64.b64encode(screenshot_png(label, n)).decode(),
            }
        ]
    return [step]


HISTORY = 30  # support answers the demo reviewer has already decided: 17 approved, 9 corrected, 4 rejected


def decide_some(user: Any, rnd: random.Random) -> int:
    """A short review history through the review services (claim, then verdict), so the datasets
    page and the evidence have something to show. Only once: nothing if `user` reviewed before."""
    from reviewqueue.review.models import Queue, Review
    from reviewqueue.review.services import claim_next_item, submit_review

    queue = Queue.objects.filter(slug="support-answers").first()
    if queue is None or Review.objects.filter(reviewer=user).exists():
        return 0
    decided = 0
    for n in range(HISTORY):
        item = claim_next_item(queue=queue, user=user)
        if item is None:
            break
        content = (item.step.output or {}).get("content") or ""
        labels = {"tone": rnd.choice(["good", "good", "acceptable"]), "groundedness": rnd.choice([4, 5])}
        if n % 10 < 2 or n % 10 == 5:  # 9 of 30: a correction
            corrected = {"role": "assistant", "content": f"{content} Your order's tracking link is in your inbox."}
            submit_review(item_id=item.pk, user=user, verdict="correct", output=corrected, labels=labels)
        elif n % 10 == 9 or n == 14:  # 4 of 30
            reason = "Promises a delivery date the order status does not give."
            labels = {"tone": "poor", "groundedness": 1}
            submit_review(item_id=item.pk, user=user, verdict="reject", reason=reason, labels=labels)
        else:
            submit_review(item_id=item.pk, user=user, verdict="approve", labels=labels)
        decided += 1
    return decided


class Command(BaseCommand):
    help = "Create demo users, agents, queues, rules and a few hundred realistic steps (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--traces", type=int, default=120, help="support conversations to create")
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        for username, is_staff in USERS:
            user, created = users.objects.get_or_create(
                username=username, defaults={"email": f"{username}@example.com"}
            )
            if created:
                user.is_staff = user.is_superuser = is_staff
                user.set_password(DEMO_PASSWORD)
                user.save()
        call_command("apply_config", str(DEMO_CONFIG), stdout=self.stdout)

        rnd = random.Random(options["seed"])
        support, _ = Agent.objects.get_or_create(
            name="support-bot", defaults={"description": "Customer support chat agent"}
        )
        browser, _ = Agent.objects.get_or_create(
            name="checkout-browser", defaults={"description": "Computer-use agent"}
        )
        support_steps: list[dict[str, Any]] = []
        for n in range(options["traces"]):
            support_steps.extend(support_trace(rnd, n))
        browser_steps: list[dict[str, Any]] = []
        for n in range(30):
            browser_steps.extend(browser_trace(rnd, n, with_image=n < 8))

        created = 0
        for agent, steps in ((support, support_steps), (browser, browser_steps)):
            for start in range(0, len(steps), 200):
                answers, _ = ingest_steps(agent=agent, payloads=steps[start : start + 200])
                created += sum(1 for a in answers if a["created"])
        sent = len(support_steps) + len(browser_steps)
        self.stdout.write(f"Demo data: {created} new steps ({sent} sent; replays are no-ops).")
        decided = decide_some(users.objects.get(username="reviewer"), rnd)
        if decided:
            self.stdout.write(
                f"Demo history: reviewer decided {decided} support answers (datasets have cases to export)."
            )
        self.stdout.write(
            f"Log in at /accounts/login/ on the web server as reviewer / {DEMO_PASSWORD} "
            f"(or admin / {DEMO_PASSWORD} for the admin)."
        )
