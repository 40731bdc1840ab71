"""The Datasets page (staff): build a filter with a live count and preview, save it, freeze
versions (a django-q2 task; the version's card polls until it is ready), start exports and
watch their progress, download files. htmx swaps the partials."""

from __future__ import annotations

from contextlib import closing
from itertools import islice
from typing import Any

import orjson
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from evals import selectors, services
from evals.formats import NAMES, ExportContext, get_format
from evals.forms import DatasetFilterForm, RedactionForm
from evals.models import Dataset, DatasetVersion, Export, ExportStatus, VersionStatus
from evals.redaction import Redactor

PREVIEW_RECORDS = 5
PREVIEW_SCAN = 200  # cases read at most to find the preview records


def _require_staff(request: HttpRequest) -> None:
    """The one access check of this screen: datasets hold every decided step."""
    if not request.user.is_staff:
        raise PermissionDenied("Datasets are for staff only.")


def _dataset_for(request: HttpRequest, name: str) -> Dataset:
    _require_staff(request)
    return get_object_or_404(Dataset, name=name)


def _preview(form: DatasetFilterForm) -> dict[str, Any]:
    """Live count and the first records in the chosen format (redacted, as exported)."""
    if not form.is_valid():
        return {"errors": form.errors}
    try:
        filters = selectors.clean_filters(form.filters())
    except selectors.FilterError as exc:
        return {"errors": exc.errors}
    fmt = get_format(form.cleaned_data.get("preview_format") or "openai-sft")
    ratio = form.cleaned_data.get("test_ratio")
    ctx = ExportContext(out_dir=None)
    records: list[str] = []
    skipped = 0
    cases = selectors.step_cases(filters=filters, test_ratio=0.1 if ratio is None else ratio, redactor=Redactor())
    with closing(cases):  # stops the reader (and its cursor) now, not when garbage-collected
        for case in islice(cases, PREVIEW_SCAN):
            produced = fmt.records(case, ctx)
            if isinstance(produced, str):
                skipped += 1
                continue
            records.extend(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode() for r in produced)
            if len(records) >= PREVIEW_RECORDS:
                break
    return {
        "count": selectors.decided_steps(filters=filters).count(),
        "records": records[:PREVIEW_RECORDS],
        "skipped": skipped,
        "format": fmt.name,
    }


@login_required
def datasets_page(request: HttpRequest) -> HttpResponse:
    _require_staff(request)
    if request.method == "POST":
        form = DatasetFilterForm(request.POST)
        if form.is_valid():
            data = {
                "name": form.cleaned_data["name"],
                "description": form.cleaned_data.get("description") or "",
                "filters": form.filters(),
                "test_ratio": 0.1 if form.cleaned_data.get("test_ratio") is None else form.cleaned_data["test_ratio"],
            }
            try:
                dataset = services.save_dataset(data=data, actor=request.user)
            except services.DatasetError as exc:
                for field, problems in exc.errors.items():
                    form.add_error(field if field in form.fields else None, f"{field}: {'; '.join(problems)}")
            else:
                return redirect("evals:dataset", name=dataset.name)
        status = 400
    else:
        form = DatasetFilterForm(request.GET or None)
        status = 200
    context = {
        "form": form,
        "datasets": Dataset.objects.order_by("name").prefetch_related("versions"),
        "preview": _preview(form) if form.is_bound and request.method == "GET" else None,
    }
    return render(request, "evals/datasets.html", context, status=status)


@login_required
@require_GET
def preview(request: HttpRequest) -> HttpResponse:
    _require_staff(request)
    form = DatasetFilterForm(request.GET)
    return render(request, "evals/datasets.html#preview", {"preview": _preview(form)})


def _versions_context(dataset: Dataset) -> dict[str, Any]:
    versions = list(dataset.versions.order_by("-number"))
    exports = Export.objects.filter(version__in=versions).order_by("-id")
    by_version: dict[int, list[Export]] = {}
    for export in exports:
        by_version.setdefault(export.version_id, []).append(export)
    for version in versions:
        version.export_list = by_version.get(version.pk, [])
    return {**_card_context(dataset), "versions": versions}


def _page_context(dataset: Dataset, redaction: RedactionForm | None = None) -> dict[str, Any]:
    return {**_versions_context(dataset), "redaction": redaction or RedactionForm.for_dataset(dataset)}


def _card_context(dataset: Dataset) -> dict[str, Any]:
    """What a version's card needs besides the version (its export form's choices)."""
    return {"dataset": dataset, "formats": NAMES, "splits": services.SPLITS}


@login_required
@require_GET
def dataset_page(request: HttpRequest, name: str) -> HttpResponse:
    dataset = _dataset_for(request, name)
    return render(request, "evals/dataset.html", _page_context(dataset))


@login_required
@require_POST
def redaction(request: HttpRequest, name: str) -> HttpResponse:
    """Save a dataset's redaction settings; the page again with the form's errors (400) if bad."""
    dataset = _dataset_for(request, name)
    form = RedactionForm(request.POST)
    if not form.is_valid():
        return render(request, "evals/dataset.html", _page_context(dataset, form), status=400)
    data = {"redact": form.cleaned_data["redact"], "redaction_patterns": form.cleaned_data["patterns"]}
    services.save_dataset(data=data, actor=request.user, dataset=dataset)
    return redirect("evals:dataset", name=dataset.name)


@login_required
@require_POST
def freeze(request: HttpRequest, name: str) -> HttpResponse:
    dataset = _dataset_for(request, name)
    services.start_freeze(dataset=dataset, actor=request.user)
    if request.htmx:
        return render(request, "evals/dataset.html#versions", _versions_context(dataset))
    return redirect("evals:dataset", name=dataset.name)


@login_required
@require_GET
def version_progress(request: HttpRequest, name: str, number: int) -> HttpResponse:
    """A freezing version's card, polled by htmx every second; polling stops once it is ready or failed."""
    dataset = _dataset_for(request, name)
    version = get_object_or_404(DatasetVersion, dataset=dataset, number=number)
    version.export_list = list(version.exports.order_by("-id"))
    response = render(request, "evals/dataset.html#version", {**_card_context(dataset), "version": version})
    if version.status != VersionStatus.FREEZING:
        return HttpResponseStopPolling(response.content)
    return response


@login_required
@require_POST
def start_export(request: HttpRequest, name: str, number: int) -> HttpResponse:
    dataset = _dataset_for(request, name)
    version = get_object_or_404(DatasetVersion, dataset=dataset, number=number)
    fmt, split = request.POST.get("format", ""), request.POST.get("split", "all")
    if fmt not in NAMES or split not in services.SPLITS:
        return HttpResponse(f"Choose a format ({', '.join(NAMES)}) and a split.", status=400)
    try:
        export, _ = services.create_export(fmt_name=fmt, version=version, split=split, actor=request.user)
    except services.DatasetError as exc:
        return HttpResponse("; ".join(p for problems in exc.errors.values() for p in problems), status=400)
    if request.htmx:
        return render(request, "evals/dataset.html#export", {"export": export})
    return redirect("evals:dataset", name=dataset.name)


@login_required
@require_GET
def export_progress(request: HttpRequest, export_id: int) -> HttpResponse:
    _require_staff(request)
    export = get_object_or_404(Export, pk=export_id)
    response = render(request, "evals/dataset.html#export", {"export": export})
    if export.status in (ExportStatus.DONE, ExportStatus.FAILED):
        stop = HttpResponseStopPolling(response.content)
        return stop
    return response
