"""The Datasets page in a real browser: htmx live preview, save, freeze, export progress and the
download link, with the product's CSP (no inline script or style may be needed)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from evals import tasks
from evals.models import DatasetVersion, Export
from tests.evals.conftest import corpus  # noqa: F401  (the decided-steps fixture)
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _export_root(settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"


def test_build_preview_save_freeze_export_download(corpus, page, login):  # noqa: F811
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    login(UserFactory(username="boss", is_staff=True))
    page.goto("/datasets/")
    page.get_by_label("corrected", exact=True).check()
    expect(page.locator("#preview [data-count=steps]")).to_have_text("3")
    page.get_by_label("Preview format").select_option("openai-dpo")
    expect(page.locator("#preview pre.record")).to_have_count(3)
    expect(page.locator("#preview pre.record").first).to_contain_text("preferred_output")

    page.get_by_label("Name", exact=True).fill("corrections")
    page.get_by_role("button", name="Save as dataset").click()
    expect(page).to_have_url(f"{page.url.split('/datasets/')[0]}/datasets/corrections/")
    page.get_by_role("button", name="Freeze a new version").click()
    expect(page.locator("#version-1 progress")).to_be_visible()  # freezing: the card polls
    tasks.run_freeze(DatasetVersion.objects.get().pk)  # what the django-q2 worker does
    expect(page.locator("#version-1 [data-count=cases]")).to_have_text("3", timeout=5000)

    page.locator("#version-1 select[name=format]").select_option("trl-dpo")
    page.locator("#version-1").get_by_role("button", name="Export").click()
    expect(page.locator("#exports-1 progress")).to_be_visible()
    tasks.run_export(Export.objects.get().pk)  # what the django-q2 worker does
    expect(page.locator("#exports-1").get_by_role("link", name="Download")).to_be_visible(timeout=5000)
    expect(page.locator("#exports-1 progress")).to_have_count(0)
    assert violations == [] and page.errors == []
