"""The exports and datasets API, the django-q2 task (retries, all-or-nothing) and the CLI."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone
from django_q.models import OrmQ
from rest_framework.test import APIClient

from evals import services, tasks
from evals.formats import REGISTRY
from evals.models import Dataset, Export, ExportStatus
from reviewqueue.core.models import AuditEvent
from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _export_root(tmp_path, settings):
    settings.EXPORT_ROOT = tmp_path / "exports"


@pytest.fixture
def staff(db):
    return UserFactory(username="boss", is_staff=True)


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def freeze(client, name: str) -> dict:
    """Freeze over the API: 202 with the version `freezing` and its task queued; the task (what
    the django-q2 worker runs) makes it ready."""
    started = client.post(f"/api/v1/datasets/{name}/versions")
    assert started.status_code == 202, started.content
    body = started.json()
    assert body["status"] == "freezing" and body["case_count"] == 0 and body["frozen_at"] is None
    tasks.run_freeze(body["id"])
    return client.get(f"/api/v1/datasets/{name}/versions/{body['number']}").json()


def start_export(client, django_capture_on_commit_callbacks, body):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/exports", body, format="json")
    return response


def test_export_is_queued_run_by_the_task_and_downloaded(corpus, staff, django_capture_on_commit_callbacks):
    client = client_for(staff)
    response = start_export(client, django_capture_on_commit_callbacks, {"format": "openai-sft", "filters": {}})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["download_url"] is None
    assert OrmQ.objects.count() == 1  # really queued for the django-q2 worker
    assert client.get(f"/api/v1/exports/{body['id']}/download").status_code == 409
    tasks.run_export(body["id"])  # what the worker runs
    detail = client.get(f"/api/v1/exports/{body['id']}").json()
    assert detail["status"] == "done" and detail["progress"] == 1 and detail["rows"] == 15
    assert detail["rows_total"] == 18 and detail["summary"]["duplicates_removed"] == 1
    download = client.get(detail["download_url"])
    assert download.status_code == 200 and download.streaming
    data = b"".join(download.streaming_content)
    assert len(data.splitlines()) == 15 and detail["sha256"]
    manifest = b"".join(client.get(detail["manifest_url"]).streaming_content).decode().splitlines()
    assert json.loads(manifest[-1])["summary"]["rows"] == 15


def test_exports_are_listed_newest_first_paginated_and_filtered(corpus, staff) -> None:
    client = client_for(staff)
    assert client.post("/api/v1/datasets", {"name": "support"}, format="json").status_code == 201
    version = freeze(client, "support")
    ids = [
        services.create_export(fmt_name=fmt, filters={}, enqueue=False)[0].pk
        for fmt in ("jsonl", "openai-sft", "inspect")
    ]
    from_version = client.post("/api/v1/exports", {"format": "csv", "version": version["id"]}, format="json").json()
    tasks.run_export(ids[0])

    page = client.get("/api/v1/exports", {"page_size": 2}).json()
    assert [e["id"] for e in page["results"]] == [from_version["id"], ids[2]]
    rest = client.get(page["next"]).json()
    assert [e["id"] for e in rest["results"]] == [ids[1], ids[0]] and rest["next"] is None
    assert rest["results"][-1]["status"] == "done" and rest["results"][-1]["download_url"]

    done = client.get("/api/v1/exports", {"status": "done"}).json()["results"]
    assert [e["id"] for e in done] == [ids[0]]
    assert [e["id"] for e in client.get("/api/v1/exports", {"format": "inspect"}).json()["results"]] == [ids[2]]
    by_dataset = client.get("/api/v1/exports", {"dataset": "support"}).json()["results"]
    assert [e["id"] for e in by_dataset] == [from_version["id"]]

    bad = client.get("/api/v1/exports", {"status": "finished"})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("status: must be one of")
    assert client.get("/api/v1/exports", {"format": "xml"}).status_code == 400
    reviewer = client_for(UserFactory(username="rev"))
    assert reviewer.get("/api/v1/exports").status_code == 403


def test_a_version_exported_twice_is_served_from_the_stored_file(corpus, staff, django_capture_on_commit_callbacks):
    client = client_for(staff)
    assert client.post("/api/v1/datasets", {"name": "support"}, format="json").status_code == 201
    version = freeze(client, "support")
    assert version["number"] == 1 and version["case_count"] == 17 and version["status"] == "ready"
    first = start_export(client, django_capture_on_commit_callbacks, {"format": "jsonl", "version": version["id"]})
    tasks.run_export(first.json()["id"])
    second = start_export(client, django_capture_on_commit_callbacks, {"format": "jsonl", "dataset": "support"})
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"] and second.json()["status"] == "done"
    assert OrmQ.objects.count() == 1 and Export.objects.count() == 1
    # another split is another file
    third = start_export(
        client, django_capture_on_commit_callbacks, {"format": "jsonl", "version": version["id"], "split": "test"}
    )
    assert third.json()["id"] != first.json()["id"]


def test_a_failing_export_leaves_no_file_and_a_retry_completes(corpus, monkeypatch):
    export, _ = services.create_export(fmt_name="jsonl", filters={}, enqueue=False)
    fmt = REGISTRY["jsonl"]
    calls = {"n": 0}

    def exploding(case, ctx):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk on fire")
        return fmt.records(case, ctx)

    monkeypatch.setitem(REGISTRY, "jsonl", type(fmt)(**{**fmt.__dict__, "records": exploding}))
    with pytest.raises(RuntimeError):
        tasks.run_export(export.pk)
    export.refresh_from_db()
    assert export.status == ExportStatus.FAILED and "disk on fire" in export.error and not export.file
    directory = services.export_root() / str(export.pk)
    assert list(directory.iterdir()) == []  # neither a partial file nor a temporary one
    monkeypatch.setitem(REGISTRY, "jsonl", fmt)
    tasks.run_export(export.pk)  # django-q2's retry, or a re-run
    export.refresh_from_db()
    assert export.status == ExportStatus.DONE and export.rows == 17 and export.attempts == 2
    assert sorted(p.name for p in directory.iterdir()) == [
        f"export-{export.pk}-jsonl.jsonl",
        f"export-{export.pk}-jsonl.manifest.jsonl",
        "images",  # the screenshot, referenced by a relative path
    ]


def test_a_killed_worker_is_retried_from_scratch(corpus):
    export, _ = services.create_export(fmt_name="openai-sft", filters={}, enqueue=False)
    directory = services.export_root() / str(export.pk)
    directory.mkdir(parents=True)
    leftover = directory / f".export-{export.pk}-openai-sft.jsonl.part-123-abcd"
    leftover.write_text('{"messages": [')  # what a SIGKILLed attempt leaves
    Export.objects.filter(pk=export.pk).update(
        status=ExportStatus.RUNNING, attempts=1, started_at=timezone.now() - timedelta(minutes=5)
    )
    tasks.run_export(export.pk)
    export.refresh_from_db()
    assert export.status == ExportStatus.DONE and export.attempts == 2 and not leftover.exists()


def test_a_live_running_export_is_not_run_twice(corpus):
    export, _ = services.create_export(fmt_name="jsonl", filters={}, enqueue=False)
    Export.objects.filter(pk=export.pk).update(status=ExportStatus.RUNNING, started_at=timezone.now())
    assert tasks.run_export(export.pk) is None
    assert Export.objects.get(pk=export.pk).status == ExportStatus.RUNNING


def test_bad_export_requests_are_400_naming_the_field(staff):
    client = client_for(staff)
    response = client.post("/api/v1/exports", {"format": "excel"}, format="json")
    assert response.status_code == 400 and response.json()["detail"].startswith("format:")
    response = client.post("/api/v1/exports", {"format": "jsonl", "filters": {"kinds": ["dance"]}}, format="json")
    assert response.status_code == 400 and "filters.kinds" in response.json()["errors"]
    response = client.post("/api/v1/exports", {"format": "jsonl", "version": 999}, format="json")
    assert response.status_code == 400 and "version" in response.json()["errors"]
    response = client.post("/api/v1/exports", {"format": "jsonl", "split": "dev"}, format="json")
    assert response.status_code == 400 and "split" in response.json()["errors"]
    response = client.post("/api/v1/datasets", {"name": "x", "test_ratio": -1}, format="json")
    assert response.status_code == 400 and "test_ratio" in response.json()["errors"]
    # A misplaced or misspelt option is refused, not silently ignored (the export would differ).
    response = client.post("/api/v1/exports", {"format": "jsonl", "include_auto_approved": True}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("include_auto_approved: unknown field; expected: format, split")
    response = client.post("/api/v1/datasets", {"name": "x", "ratio": 0.2}, format="json")
    assert response.status_code == 400 and "ratio" in response.json()["errors"]
    response = client.post("/api/v1/exports", [{"format": "jsonl"}], format="json")
    assert response.status_code == 400 and response.json()["detail"] == "body: must be a JSON object"
    response = client.post(
        "/api/v1/exports", {"format": "jsonl", "filters": {"since": "2026-12-05", "until": "2026-12-01"}}, format="json"
    )
    assert response.status_code == 400 and response.json()["errors"]["filters.until"] == ["must not be before since"]
    assert Export.objects.count() == 0 and not Dataset.objects.filter(name="x").exists()


def test_unknown_api_paths_answer_404_in_json(staff):
    client = client_for(staff)
    for path in ("/api/v1/exports/abc", "/api/v1/nothing-here", "/api/v1/exports/"):
        response = client.get(path)
        assert response.status_code == 404 and response["Content-Type"] == "application/json"
        assert response.json()["detail"] == f"no API endpoint at {path} (see /api/docs/)"
    assert client.get("/api/v1/exports/999999").json()["detail"]  # a known path: DRF's own 404
    assert client.get("/api/docs").status_code == 301  # outside /api/v1/, Django's slash redirect still works


def test_exports_and_datasets_are_staff_only(db):
    client = client_for(UserFactory(username="rev"))
    assert client.post("/api/v1/exports", {"format": "jsonl"}, format="json").status_code == 403
    assert client.get("/api/v1/datasets").status_code == 403
    assert APIClient().get("/api/v1/exports/1").status_code in (401, 403)


def test_dataset_api_crud(corpus, staff):
    client = client_for(staff)
    created = client.post(
        "/api/v1/datasets",
        {"name": "refunds", "filters": {"kinds": ["tool_call"]}, "test_ratio": 0.2},
        format="json",
    )
    assert created.status_code == 201 and created.json()["filters"] == {"kinds": ["tool_call"]}
    patched = client.patch("/api/v1/datasets/refunds", {"filters": {"verdicts": ["corrected"]}}, format="json")
    assert patched.json()["filters"] == {"verdicts": ["corrected"]}
    freeze(client, "refunds")
    versions = client.get("/api/v1/datasets/refunds/versions").json()["results"]
    assert versions[0]["case_count"] == 3 and versions[0]["counts"]["verdict"] == {"corrected": 3}
    assert client.get("/api/v1/datasets/refunds/versions/1").json()["number"] == 1
    assert client.get("/api/v1/datasets").json()["results"][0]["latest_version"]["number"] == 1
    assert client.delete("/api/v1/datasets/refunds").status_code == 204


def test_deleting_a_dataset_removes_its_exports_files_once_committed(
    corpus, staff, settings, django_capture_on_commit_callbacks
):
    client = client_for(staff)
    client.post("/api/v1/datasets", {"name": "refunds"}, format="json")
    freeze(client, "refunds")
    kept, _ = services.create_export(fmt_name="jsonl", filters={}, enqueue=False)  # ad hoc: not the dataset's
    version = Dataset.objects.get(name="refunds").versions.get()
    exports = [services.create_export(fmt_name=f, version=version, enqueue=False)[0] for f in ("jsonl", "inspect")]
    for export in (*exports, kept):
        tasks.run_export(export.pk)
    directories = [services.export_directory(e.pk) for e in exports]
    assert all(d.is_dir() and any(d.iterdir()) for d in directories)
    with pytest.raises(RuntimeError), transaction.atomic():  # rolled back: the files stay
        services.delete_dataset(dataset=version.dataset, actor=staff)
        raise RuntimeError("the deletion is rolled back")
    assert all(d.is_dir() for d in directories)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete("/api/v1/datasets/refunds").status_code == 204
    assert not any(d.exists() for d in directories)
    assert services.export_directory(kept.pk).is_dir() and Export.objects.filter(pk=kept.pk).exists()
    event = AuditEvent.objects.get(action="dataset.deleted")
    assert event.before == {"name": "refunds", "versions": 1, "exports": 2} and event.actor_id == staff.pk


def test_cli_exports_ad_hoc_and_datasets(corpus, tmp_path):
    out = tmp_path / "sft.jsonl"
    stdout = StringIO()
    call_command("export_dataset", "--format", "openai-sft", "--out", str(out), "--queue", "support", stdout=stdout)
    assert "wrote 15 openai-sft records" in stdout.getvalue()
    assert len(out.read_text().splitlines()) == 15 and (tmp_path / "sft.manifest.jsonl").is_file()
    services.save_dataset(data={"name": "support", "test_ratio": 0.5})
    test_out = tmp_path / "test.jsonl"
    err = StringIO()
    call_command(
        "export_dataset", "--format", "inspect", "--out", str(test_out), "--dataset", "support", "--split", "test",
        stdout=StringIO(), stderr=err,
    )  # fmt: skip
    assert "froze support v1" in err.getvalue()
    rows = [json.loads(line) for line in test_out.read_text().splitlines()]
    assert rows and {r["metadata"]["split"] for r in rows} == {"test"}
    assert all(r["metadata"]["dataset_version"] for r in rows)
    auto = tmp_path / "auto.jsonl"
    call_command(
        "export_dataset", "--format", "jsonl", "--out", str(auto), "--include-auto-approved", stdout=StringIO()
    )
    records = [json.loads(line) for line in auto.read_text().splitlines()]
    assert any(r["auto"] and r["verdict"] == "auto_approved" for r in records) and len(records) == 18
    version_out = tmp_path / "v1.jsonl"
    version_id = str(services.Dataset.objects.get(name="support").versions.get().pk)
    call_command(
        "export_dataset", "--format", "trl-sft", "--out", str(version_out), "--version", version_id, stdout=StringIO()
    )
    assert version_out.read_text().count("\n") == 15
    export = ["export_dataset", "--format", "jsonl", "--out"]
    with pytest.raises(CommandError, match="no dataset named"):
        call_command(*export, str(auto), "--dataset", "nope")
    with pytest.raises(CommandError, match="bad filter"):
        call_command("export_dataset", "--format", "jsonl", "--out", str(auto), "--since", "yesterday")
    with pytest.raises(CommandError, match="bad filter: until: must not be before since"):
        call_command(*export, str(auto), "--since", "2026-02-01", "--until", "2026-01-31")


def test_export_targets_that_cannot_be_written_are_refused_before_anything_is(corpus, tmp_path):
    """`--out` naming a directory (or the manifest's own path) fails at once with a message, and
    leaves nothing behind: before, the data file's final rename failed with a traceback after the
    manifest had been renamed into place beside the directory."""
    before = set(tmp_path.parent.iterdir()), set(tmp_path.iterdir())
    export, out = ["export_dataset", "--format", "jsonl", "--out"], tmp_path / "a.jsonl"
    with pytest.raises(CommandError, match=f"{tmp_path} is a directory: give the path of a file to write"):
        call_command(*export, str(tmp_path), stdout=StringIO())
    with pytest.raises(CommandError, match="the data file and the manifest are both"):
        call_command(*export, str(out), "--manifest", str(out), stdout=StringIO())
    (tmp_path / "m").mkdir()
    with pytest.raises(CommandError, match="is a directory"):
        call_command(*export, str(out), "--manifest", str(tmp_path / "m"), stdout=StringIO())
    assert (set(tmp_path.parent.iterdir()), set(tmp_path.iterdir())) == (before[0], {*before[1], tmp_path / "m"})


def test_admin_lists_datasets_versions_and_exports(corpus, admin_client):
    dataset = services.save_dataset(data={"name": "support"})
    services.freeze_version(dataset=dataset)
    services.create_export(fmt_name="jsonl", filters={}, enqueue=False)
    for model in ("dataset", "datasetversion", "export"):
        response = admin_client.get(f"/admin/evals/{model}/")
        assert response.status_code == 200, model
    assert admin_client.get("/admin/evals/export/add/").status_code == 403


@pytest.mark.postgres
def test_progress_is_visible_to_other_connections_while_the_export_streams(
    transactional_db, corpus, monkeypatch
) -> None:
    """On PostgreSQL the rows stream inside a transaction; the progress (and its heartbeat) must
    still be committed as it goes, or the progress bar stands still and the export's row stays
    locked until the end."""
    from django.db import DEFAULT_DB_ALIAS, connections

    from evals import exporting

    monkeypatch.setattr(exporting, "PROGRESS_EVERY", 1)
    export, _ = services.create_export(fmt_name="jsonl", filters={}, enqueue=False)
    seen: list[int] = []
    write = services.write_progress

    def write_and_look(db, export_id, cases_read, rows):
        write(db, export_id, cases_read, rows)
        observer = connections.create_connection(DEFAULT_DB_ALIAS)
        try:
            with observer.cursor() as cursor:
                cursor.execute("SET lock_timeout = '2s'")  # the row must not be locked by the export
                cursor.execute("SELECT rows_done FROM evals_export WHERE id = %s FOR UPDATE", [export_id])
                seen.append(cursor.fetchone()[0])
        finally:
            observer.close()

    monkeypatch.setattr(services, "write_progress", write_and_look)
    done = services.run_export(export_id=export.pk)
    assert done.status == ExportStatus.DONE and done.rows_done > 3
    assert seen[:3] == [1, 2, 3] and seen[-1] == done.rows_done


def test_the_bundle_holds_the_file_its_manifest_and_the_images_it_names(
    corpus, staff, django_capture_on_commit_callbacks
):
    import io
    import tarfile

    client = client_for(staff)
    started = start_export(client, django_capture_on_commit_callbacks, {"format": "trl-sft", "filters": {}})
    export_id = started.json()["id"]
    assert started.json()["bundle_url"] is None
    assert client.get(f"/api/v1/exports/{export_id}/bundle").status_code == 409
    tasks.run_export(export_id)
    detail = client.get(f"/api/v1/exports/{export_id}").json()
    response = client.get(detail["bundle_url"])
    assert response.status_code == 200 and response.streaming and response["Content-Type"] == "application/x-tar"
    assert response["Content-Disposition"] == f'attachment; filename="export-{export_id}-trl-sft.tar"'
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content))) as tar:
        names = tar.getnames()
        data = tar.extractfile(f"export-{export_id}-trl-sft.jsonl").read()
        manifest = tar.extractfile(f"export-{export_id}-trl-sft.manifest.jsonl").read()
        images = {name: tar.extractfile(name).read() for name in names if name.startswith("images/")}
    assert data == b"".join(client.get(detail["download_url"]).streaming_content)
    assert manifest == b"".join(client.get(detail["manifest_url"]).streaming_content)
    named = {path for line in data.splitlines() for path in json.loads(line).get("images", [])}
    assert named and named == set(images)  # every image the file names is in the bundle
    assert all(content.startswith(b"\x89PNG") for content in images.values())

    for path in (services.export_root() / str(export_id)).glob("*.jsonl"):
        path.unlink()
    assert client.get(detail["bundle_url"]).status_code == 404


def test_tar_stream_pads_every_member_and_refuses_a_file_that_changed(tmp_path):
    import io
    import tarfile

    from evals.bundle import tar_stream

    files = {"a.txt": b"x" * 513, "b.bin": b"", "images/c.png": b"\x89PNG" + b"y" * 2000}
    members = []
    for name, content in files.items():
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(content)
        members.append((name, path))
    blob = b"".join(tar_stream(members))
    assert len(blob) % tarfile.BLOCKSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == files

    stream = tar_stream(members)
    next(stream)  # a.txt's header: its size is promised
    members[0][1].write_bytes(b"short")
    with pytest.raises(OSError, match="changed while it was being bundled"):
        list(stream)
