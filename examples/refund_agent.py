"""A runnable example: an agent whose refunds above 100 EUR wait for a human.

    # 1. the server (make run), an agent key, a queue and a rule that routes requested reviews:
    KEY=$(.venv/bin/python manage.py create_api_key --agent refund-agent | tail -n 1)
    # (make run's demo config already has queues; add a rule in the admin, or apply_config with:
    #   rules: [{name: human-requested, conditions: [{field: metadata.review_requested, op: eq, value: true}],
    #            action: route, queue: <a queue slug>}])
    # 2. run the agent; it blocks on the 250 EUR refund until a reviewer decides at /review/<queue>/
    REVIEWQUEUE_URL=http://127.0.0.1:8000 REVIEWQUEUE_API_KEY=$KEY .venv/bin/python examples/refund_agent.py

Needs only `httpx` (or `requests`) next to reviewqueue/client.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from reviewqueue.client import Client, DecisionTimeout, Rejected

client = Client(os.environ.get("REVIEWQUEUE_URL", "http://127.0.0.1:8000"), os.environ["REVIEWQUEUE_API_KEY"])


@client.review(queue_when=lambda args: args["amount_eur"] > 100, confidence=0.6, timeout=600)
def issue_refund(order_id: str, amount_eur: float, reason: str = "") -> dict:
    """The real tool would call the payment provider here."""
    print(f"  refunding {amount_eur:.2f} EUR on order {order_id} ({reason or 'no reason'})")
    return {"ok": True, "order_id": order_id, "amount_eur": amount_eur}


def main() -> int:
    for order_id, amount in [("A100", 25.0), ("A200", 250.0)]:
        print(f"agent: refund {amount} EUR on {order_id}?", flush=True)
        try:
            result = issue_refund(order_id, amount, reason="damaged parcel")
        except Rejected as exc:
            print(f"  not refunded: {exc}")
            continue
        except DecisionTimeout as exc:
            print(f"  gave up waiting: {exc}")
            continue
        print(f"  done: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
