"""Figure 4: the reviewer's htmx workbench, server time, at depth 100,000 with 50-step traces.

4a-b: `GET /review/<slug>/` (claim or resume, the full page with the trace as context).
4c-d: the htmx verdict POST (Approve) that answers with the next item's fragment.
Both beside a `@login_required` bare view measured in the same run (session and user lookups
included), requests interleaved so that both see the same machine load.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from urllib.parse import urlencode

from bench.client import HttpClient, Samples
from bench.report import Figure
from bench.review import BIG_QUEUE, CSRF_SECRET, TRACE_LENGTH, ReviewFixtures


class _VerdictFinder(HTMLParser):
    """Finds how the page posts an "approve" verdict: a form (hx-post/action) holding a button
    or input whose value is "approve", or any element with hx-post and hx-vals naming it."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.current: dict | None = None
        self.found: tuple[str, dict[str, str]] | None = None
        self.textarea: str | None = None

    def handle_data(self, data: str) -> None:
        if self.textarea and self.current is not None:
            self.current["fields"][self.textarea] += data

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.current = {"url": a.get("hx-post") or a.get("action") or "", "fields": {}}
            self.forms.append(self.current)
            return
        if self.found:
            return
        if a.get("hx-post") and "approve" in a.get("hx-vals", ""):
            self.found = (a["hx-post"], {k: str(v) for k, v in json.loads(a["hx-vals"]).items()})
            return
        if self.current is None or tag not in ("input", "button", "textarea", "select"):
            return
        name, value = a.get("name"), a.get("value", "")
        if not name:
            return
        if tag == "textarea":
            self.textarea = name
            self.current["fields"][name] = ""
            return
        if tag == "button" or a.get("type") == "submit":
            if value == "approve":
                url = a.get("hx-post") or a.get("formaction") or self.current["url"]
                self.found = (url, {**self.current["fields"], name: value})
        elif a.get("type") not in ("checkbox", "radio") or "checked" in a:
            self.current["fields"][name] = value

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self.textarea = None
        if tag == "form":
            self.current = None


def find_approve_request(html: str) -> tuple[str, dict[str, str]]:
    finder = _VerdictFinder()
    finder.feed(html)
    if not finder.found or not finder.found[0]:
        raise RuntimeError("could not find how the review page posts an approve verdict")
    return finder.found


def figure_review_page(port: int, fixtures: ReviewFixtures, *, requests: int) -> list[Figure]:
    page_path = f"/review/{BIG_QUEUE}/"
    headers = {"Cookie": fixtures.ui_cookie, "X-CSRFToken": CSRF_SECRET, "Referer": f"http://127.0.0.1:{port}/"}
    client = HttpClient(port, headers)
    first = client.request("GET", page_path)
    if first.status != 200:
        raise RuntimeError(f"GET {page_path} answered {first.status}")

    page, page_base = Samples(), Samples()
    for _ in range(10):  # warm-up
        client.request("GET", page_path)
        client.request("GET", "/bench/bare-login")
    for _ in range(requests):  # the same claimed item, resumed and rendered each time
        page.add(client.request("GET", page_path), expected=(200,))
        page_base.add(client.request("GET", "/bench/bare-login"), expected=(200,))

    verdict, verdict_base = Samples(), Samples()
    html = client.request("GET", page_path).body.decode()
    form_headers = {"HX-Request": "true", "Content-Type": "application/x-www-form-urlencoded"}
    for i in range(requests + 10):
        url, fields = find_approve_request(html)
        response = client.request("POST", url, urlencode(fields).encode(), form_headers)
        base = client.request("POST", "/bench/bare-login", urlencode(fields).encode(), form_headers)
        if response.status != 200:
            verdict.add(response, expected=(200,))
            break
        html = response.body.decode()
        if i >= 10:
            verdict.add(response, expected=(200,))
            verdict_base.add(base, expected=(200,))
    client.close()

    p, pb, v, vb = page.summary(), page_base.summary(), verdict.summary(), verdict_base.summary()
    return [
        Figure(
            "4a",
            f"review page GET p50 (server), {fixtures.depth:,} items, trace of {TRACE_LENGTH}",
            p["server_p50_ms"],
            "ms",
            "bare login view",
            pb["server_p50_ms"],
            "< 25 ms",
            not page.errors and p["server_p50_ms"] < 25,
            {"page": p, "bare_login_view": pb, "url": page_path},
        ),
        Figure(
            "4b",
            "review page GET p95 (server)",
            p["server_p95_ms"],
            "ms",
            "bare login view",
            pb["server_p95_ms"],
            "< 60 ms",
            not page.errors and p["server_p95_ms"] < 60,
        ),
        Figure(
            "4c",
            "verdict + next item p50 (server)",
            v["server_p50_ms"],
            "ms",
            "bare login view",
            vb["server_p50_ms"],
            "< 25 ms",
            not verdict.errors and v["n"] > 0 and v["server_p50_ms"] < 25,
            {"verdict": v, "bare_login_view": vb},
        ),
        Figure(
            "4d",
            "verdict + next item p95 (server)",
            v["server_p95_ms"],
            "ms",
            "bare login view",
            vb["server_p95_ms"],
            "< 60 ms",
            not verdict.errors and v["n"] > 0 and v["server_p95_ms"] < 60,
        ),
        Figure(
            "4e",
            "queries per review page GET (p50; constant in trace length)",
            p["queries_p50"],
            "",
            "bare login view",
            pb["queries_p50"],
            "(info)",
            None,
        ),
        Figure(
            "4f",
            "queries per verdict + next item (p50)",
            v["queries_p50"],
            "",
            "bare login view",
            vb["queries_p50"],
            "(info)",
            None,
        ),
    ]
