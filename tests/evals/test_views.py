"""The Datasets page: filter builder with live count and preview, datasets, freezing, exports."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django_q.models import OrmQ

from evals import services, tasks
from evals.models import Dataset, DatasetVersion, Export, describe_filters
from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _export_root(settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"


@pytest.fixture
def staff_client(db) -> Client:
    client = Client()
    client.force_login(UserFactory(username="boss", is_staff=True))
    return client


def test_page_is_staff_only(db):
    client = Client()
    assert client.get("/datasets/").status_code == 302  # to the login page
    client.force_login(UserFactory(username="rev"))
    assert client.get("/datasets/").status_code == 403
    assert client.get("/datasets/preview?kinds=llm").status_code == 403


def test_live_count_and_preview_in_the_chosen_format(corpus, staff_client):
    response = staff_client.get(
        "/datasets/preview", {"verdicts": ["corrected"], "preview_format": "openai-dpo"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-count="steps">3<' in html
    assert html.count('class="code record"') == 3 and "preferred_output" in html
    assert "<html" not in html  # just the fragment


def test_preview_escapes_agent_output_and_redacts(corpus, staff_client):
    from reviewqueue.core.models import Step

    Step.objects.filter(pk=corpus["answer-approved"].pk).update(output="<script>alert(1)</script>")
    html = staff_client.get("/datasets/preview", {"preview_format": "jsonl"}).content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    pii = staff_client.get("/datasets/preview", {"verdicts": ["corrected"], "preview_format": "jsonl"})
    assert "jane.doe@example.com" not in pii.content.decode() and "[EMAIL]" in pii.content.decode()


def test_bad_filter_shows_errors_not_a_crash(corpus, staff_client):
    html = staff_client.get("/datasets/preview", {"since": "not-a-date"}).content.decode()
    assert 'role="alert"' in html and "since" in html


def test_filters_are_shown_in_words():
    assert describe_filters({}) == "every decided step"
    filters = {"verdicts": ["corrected", "rejected"], "labels": {"tone": "rude"}, "include_auto_approved": True}
    assert (
        describe_filters(filters)
        == "verdicts: corrected, rejected · labels: tone = rude · auto-approved steps included"
    )
    assert describe_filters({"since": "2026-11-01T00:00:00+00:00"}) == "since: 2026-11-01T00:00:00+00:00"


def test_save_freeze_export_and_watch_progress(corpus, staff_client, django_capture_on_commit_callbacks):
    response = staff_client.post("/datasets/", {"name": "refunds", "kinds": ["tool_call"], "test_ratio": "0.2"})
    assert response.status_code == 302 and response["Location"] == "/datasets/refunds/"
    assert Dataset.objects.get(name="refunds").filters == {"kinds": ["tool_call"]}
    for page in ("/datasets/", "/datasets/refunds/"):
        assert "kinds: tool_call" in staff_client.get(page).content.decode()
    assert staff_client.post("/datasets/", {"name": "refunds"}).status_code == 400  # duplicate name, form shown again
    with django_capture_on_commit_callbacks(execute=True):
        fragment = staff_client.post("/datasets/refunds/freeze", HTTP_HX_REQUEST="true").content.decode()
    # a freezing version: a progress bar polled every second, no export form yet
    assert 'id="versions"' in fragment and "<progress" in fragment and 'hx-trigger="every 1s"' in fragment
    assert "/versions/1/progress" in fragment and "/versions/1/export" not in fragment
    assert OrmQ.objects.count() == 1  # the freeze is queued for the django-q2 worker
    version = DatasetVersion.objects.get(dataset__name="refunds")
    assert staff_client.get("/datasets/refunds/versions/1/progress").status_code == 200  # still freezing
    assert staff_client.post(reverse("evals:export", args=["refunds", 1]), {"format": "jsonl"}).status_code == 400
    tasks.run_freeze(version.pk)
    ready = staff_client.get("/datasets/refunds/versions/1/progress")
    assert ready.status_code == 286  # htmx stops polling
    assert 'data-count="cases">2<' in ready.content.decode() and "/versions/1/export" in ready.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        started = staff_client.post(
            reverse("evals:export", args=["refunds", version.number]),
            {"format": "trl-sft", "split": "all"},
            HTTP_HX_REQUEST="true",
        )
    export = Export.objects.get()
    assert "<progress" in started.content.decode() and 'hx-trigger="every 1s"' in started.content.decode()
    polling = staff_client.get(f"/datasets/exports/{export.pk}/progress")
    assert polling.status_code == 200 and "<progress" in polling.content.decode()
    tasks.run_export(export.pk)
    done = staff_client.get(f"/datasets/exports/{export.pk}/progress")
    assert done.status_code == 286  # htmx stops polling
    html = done.content.decode()
    assert f"/api/v1/exports/{export.pk}/download" in html and "hx-trigger" not in html
    assert f"/api/v1/exports/{export.pk}/bundle" in html
    assert staff_client.get(f"/api/v1/exports/{export.pk}/download").status_code == 200  # session auth
    page = staff_client.get("/datasets/refunds/").content.decode()
    assert "v1" in page and "trl-sft" in page and "Download" in page
    assert staff_client.post(reverse("evals:export", args=["refunds", 1]), {"format": "xml"}).status_code == 400


def test_redaction_settings_are_edited_on_the_dataset_page(corpus, staff_client, tmp_path):
    dataset = Dataset.objects.create(name="support")
    page = staff_client.get("/datasets/support/").content.decode()
    assert "Redaction settings" in page and '<input type="checkbox" name="redact" id="id_redact" checked>' in page
    saved = staff_client.post(
        "/datasets/support/redaction", {"patterns": "order_ref: ORD-[0-9]{5}\n\ncustomer_id: CUST-[0-9]{6}"}
    )
    assert saved.status_code == 302 and saved["Location"] == "/datasets/support/"
    dataset.refresh_from_db()
    assert dataset.redact is False
    assert dataset.redaction_patterns == [
        {"name": "order_ref", "pattern": "ORD-[0-9]{5}"},
        {"name": "customer_id", "pattern": "CUST-[0-9]{6}"},
    ]
    page = staff_client.get("/datasets/support/").content.decode()
    assert "order_ref: ORD-[0-9]{5}\ncustomer_id: CUST-[0-9]{6}" in page and "<dt>Redaction</dt><dd>off</dd>" in page
    # Bad lines: 400 with the line's problem, nothing saved.
    for patterns, problem in (
        ("order_ref ORD-[0-9]{5}", "line 1: write it as name: regular expression"),
        ("ok: a\nbroken: (", "line 2: pattern is not a valid regex"),
        ("Bad Name: x", "line 1: name must be lowercase letters, digits and _"),
    ):
        refused = staff_client.post("/datasets/support/redaction", {"redact": "on", "patterns": patterns})
        assert refused.status_code == 400 and problem in refused.content.decode()
        assert '<details class="redaction" open>' in refused.content.decode()
    dataset.refresh_from_db()
    assert dataset.redact is False and len(dataset.redaction_patterns) == 2
    # The next export uses them.
    staff_client.post("/datasets/support/redaction", {"redact": "on", "patterns": "order_ref: refund"})
    services.freeze_version(dataset=dataset)
    out = tmp_path / "support.jsonl"
    result = services.export_to_path(fmt_name="jsonl", out=out, version=dataset.versions.get())
    assert result.redactions.get("order_ref") and "[ORDER_REF]" in out.read_text()
