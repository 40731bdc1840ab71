"""Playwright (sync API) driving Debian's chromium against pytest-django's live server.

One browser for the whole session; a fresh context (cookies, storage) per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="package")
def browser() -> Iterator:
    """One chromium for all the browser tests, closed after the last of them.

    Playwright's sync API keeps an event loop running in this thread, which makes Django refuse
    ORM calls (fixtures, database assertions, the live server's flush) as "async"; they are
    synchronous and safe here, so DJANGO_ALLOW_ASYNC_UNSAFE is set exactly while Playwright runs,
    and the rest of the suite keeps Django's check."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("The browser tests need Debian's chromium: apt-get install -y chromium")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server) -> Iterator:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.errors = []  # uncaught page errors: any is a test failure where asserted
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    # Content-Security-Policy violations (an inline script or style) are reported on the console.
    page.on("console", lambda message: "Content Security Policy" in message.text and page.errors.append(message.text))
    yield page
    context.close()


@pytest.fixture
def login(page, live_server):
    """Log `user` in by setting a session cookie (the login form itself is tested once)."""
    from django.conf import settings
    from django.test import Client

    def do(user) -> None:
        client = Client()
        client.force_login(user)
        page.context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": live_server.url,
                }
            ]
        )

    return do
