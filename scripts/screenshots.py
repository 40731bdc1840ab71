"""Screenshots of the reviewer's main screens for docs/screenshots/.

Run against a server with the demo data (`make run` in another terminal):
    .venv/bin/python scripts/screenshots.py [--url http://127.0.0.1:8000] [--out docs/screenshots]
Needs Debian's chromium (the same one the browser tests use). It reviews a few demo items.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def shoot(page: Page, out: Path, name: str, *, full_page: bool = False) -> None:
    page.screenshot(path=str(out / f"{name}.png"), full_page=full_page)
    print(f"wrote {out / name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--user", default="reviewer")
    parser.add_argument("--password", default="reviewqueue-demo")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 860})
        page.goto(f"{args.url}/accounts/login/")
        shoot(page, out, "login")
        page.get_by_label("Username").fill(args.user)
        page.get_by_label("Password").fill(args.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{args.url}/")
        shoot(page, out, "home")

        page.goto(f"{args.url}/review/support-answers/")
        shoot(page, out, "text-item")
        for _ in range(2):  # a little history
            page.keyboard.press("a")
            page.wait_for_timeout(400)

        page.goto(f"{args.url}/review/tool-calls/")
        page.keyboard.press("c")
        editor = page.get_by_label("Corrected output")
        value = json.loads(editor.input_value())
        arguments = value["tool_calls"][0]["function"]["arguments"]
        arguments["amount_eur"] = 40
        editor.fill(json.dumps(value, indent=2))
        page.locator("#diff .d-add").first.wait_for()
        shoot(page, out, "tool-call-correction")
        editor.press("Control+Enter")
        page.wait_for_timeout(400)

        page.goto(f"{args.url}/review/computer-use/")
        page.locator("svg[data-screen]").wait_for()
        shoot(page, out, "computer-use")

        page.goto(f"{args.url}/history/")
        shoot(page, out, "history")

        narrow = browser.new_page(viewport={"width": 420, "height": 900})
        narrow.context.add_cookies(page.context.cookies())
        narrow.goto(f"{args.url}/review/support-answers/")
        shoot(narrow, out, "narrow-item")
        browser.close()


if __name__ == "__main__":
    main()
