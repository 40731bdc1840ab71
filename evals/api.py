"""/api/v1/exports and /api/v1/datasets (staff only: exports hold every decided step).

- POST /api/v1/exports {"format", "filters"? | "version"? | "dataset"?, "split"?} → 202 with the
  export (a version already exported in that format and split answers its stored export).
- GET /api/v1/exports → every export, newest first (cursor-paginated; ?status=, ?format=, ?dataset=).
- GET /api/v1/exports/{id} → status, progress, rows; GET .../download and .../manifest stream files;
  GET .../bundle streams both and the images/ they refer to as one tar.
- GET/POST /api/v1/datasets; GET/PATCH/DELETE /api/v1/datasets/{name};
  GET/POST /api/v1/datasets/{name}/versions (POST starts a freeze: 202, `freezing` until its
  django-q2 task has stored the cases, then `ready`); GET .../versions/{number}.
"""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evals import selectors, services
from evals.bundle import bundle_members, tar_stream
from evals.formats import NAMES, get_format
from evals.models import Dataset, DatasetVersion, Export, ExportStatus
from reviewqueue.api.pagination import NewestFirstPagination

EXPORT_FIELDS = ("format", "split", "version", "dataset", "filters")  # POST /api/v1/exports


def bad_request(errors: dict[str, list[str]]) -> Response:
    first = next(iter(errors.items()))
    return Response({"detail": f"{first[0]}: {first[1][0]}", "errors": errors}, status=status.HTTP_400_BAD_REQUEST)


def export_json(export: Export) -> dict[str, Any]:
    done = export.status == ExportStatus.DONE
    return {
        "id": export.pk,
        "format": export.format,
        "version": export.version_id,
        "filters": export.filters,
        "split": export.split,
        "status": export.status,
        "progress": round(export.progress, 4),
        "rows": export.rows,
        "rows_done": export.rows_done,
        "rows_total": export.rows_total,
        "sha256": export.sha256 or None,
        "size_bytes": export.size_bytes,
        "summary": export.summary,
        "error": export.error or None,
        "attempts": export.attempts,
        "created_at": export.created_at.isoformat(),
        "finished_at": export.finished_at.isoformat() if export.finished_at else None,
        "download_url": reverse("api-export-download", args=[export.pk]) if done else None,
        "manifest_url": reverse("api-export-manifest", args=[export.pk]) if done else None,
        "bundle_url": reverse("api-export-bundle", args=[export.pk]) if done else None,
    }


def version_json(version: DatasetVersion) -> dict[str, Any]:
    return {
        "id": version.pk,
        "dataset": version.dataset.name,
        "number": version.number,
        "content_hash": version.content_hash,
        "case_count": version.case_count,
        "duplicates_removed": version.duplicates_removed,
        "counts": version.counts,
        "filters": version.filters,
        "test_ratio": version.test_ratio,
        "status": version.status,
        "progress": round(version.progress, 4),
        "cases_done": version.cases_done,
        "cases_total": version.cases_total,
        "error": version.error or None,
        "created_at": version.created_at.isoformat(),
        "frozen_at": version.frozen_at.isoformat() if version.frozen_at else None,
    }


def dataset_json(dataset: Dataset) -> dict[str, Any]:
    latest = dataset.versions.order_by("-number").first()
    return {
        "name": dataset.name,
        "description": dataset.description,
        "filters": dataset.filters,
        "test_ratio": dataset.test_ratio,
        "redact": dataset.redact,
        "redaction_patterns": dataset.redaction_patterns,
        "created_at": dataset.created_at.isoformat(),
        "latest_version": version_json(latest) if latest else None,
    }


class JSONOnly(DefaultContentNegotiation):
    """Always the JSON renderer: here `?format=` filters exports by format, it picks no renderer."""

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


class ExportCreateView(APIView):
    permission_classes = [IsAdminUser]
    content_negotiation_class = JSONOnly

    @extend_schema(
        operation_id="exports_list",
        summary="Exports, newest first (cursor-paginated); filter by status, format, dataset",
        parameters=[
            OpenApiParameter("status", str, enum=list(ExportStatus.values)),
            OpenApiParameter("format", str, enum=list(NAMES)),
            OpenApiParameter("dataset", str, description="a dataset's name: exports of its versions"),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request) -> Response:
        exports = Export.objects.all()
        errors: dict[str, list[str]] = {}
        wanted = request.query_params.get("status")
        if wanted is not None:
            if wanted not in ExportStatus.values:
                errors["status"] = [f"must be one of: {', '.join(ExportStatus.values)}"]
            exports = exports.filter(status=wanted)
        fmt = request.query_params.get("format")
        if fmt is not None:
            if fmt not in NAMES:
                errors["format"] = [f"must be one of: {', '.join(NAMES)}"]
            exports = exports.filter(format=fmt)
        dataset = request.query_params.get("dataset")
        if dataset is not None:
            exports = exports.filter(version__dataset__name=dataset)
        if errors:
            return bad_request(errors)
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(exports, request, view=self)
        return paginator.get_paginated_response([export_json(export) for export in page])

    @extend_schema(operation_id="exports_create", request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        data = request.data
        if not isinstance(data, dict):
            return bad_request({"body": ["must be a JSON object"]})
        unknown = f"unknown field; expected: {', '.join(EXPORT_FIELDS)}"
        errors: dict[str, list[str]] = {str(key): [unknown] for key in data if key not in EXPORT_FIELDS}
        fmt = data.get("format")
        try:
            get_format(fmt if isinstance(fmt, str) else "")
        except ValueError:
            errors["format"] = [f"required, one of: {', '.join(NAMES)}"]
        split = data.get("split", "all")
        if split not in services.SPLITS:
            errors["split"] = [f"must be one of {', '.join(services.SPLITS)}"]
        version = None
        sources = [k for k in ("version", "dataset") if data.get(k) not in (None, "")]
        if len(sources) > 1 or (sources and data.get("filters")):
            errors["version"] = ["give one of version, dataset or filters"]
        elif "version" in sources:
            version = (
                DatasetVersion.objects.filter(pk=data["version"]).first() if str(data["version"]).isdigit() else None
            )
            if version is None:
                errors["version"] = [f"no dataset version {data['version']!r}"]
        elif "dataset" in sources:
            dataset = Dataset.objects.filter(name=str(data["dataset"])).first()
            version = services.latest_ready_version(dataset) if dataset else None
            if version is None:
                errors["dataset"] = [f"no frozen (ready) version of dataset {data['dataset']!r}; freeze one first"]
        filters: dict[str, Any] = {}
        if version is None and "filters" in data:
            try:
                filters = selectors.clean_filters(data.get("filters"))
            except selectors.FilterError as exc:
                errors.update({f"filters.{k}" if k != "filters" else k: v for k, v in exc.errors.items()})
        if errors:
            return bad_request(errors)
        try:
            export, _created = services.create_export(
                fmt_name=fmt, version=version, filters=filters, split=split, actor=request.user
            )
        except services.DatasetError as exc:
            return bad_request(exc.errors)
        return Response(export_json(export), status=status.HTTP_202_ACCEPTED)


class ExportDetailView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="exports_retrieve", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, export_id: int) -> Response:
        return Response(export_json(get_object_or_404(Export, pk=export_id)))


def _serve(export: Export, relative: str, filename: str) -> FileResponse:
    file_path = services.export_root() / relative
    if not file_path.is_file():
        raise Http404("The export file is gone.")
    return FileResponse(open(file_path, "rb"), as_attachment=True, filename=filename)


class ExportNotDone(APIException):
    status_code = status.HTTP_409_CONFLICT


def _finished_export(export_id: int) -> Export:
    """The export whose files are asked for: 404 when there is none, 409 until it is done."""
    export = get_object_or_404(Export, pk=export_id)
    if export.status != ExportStatus.DONE:
        raise ExportNotDone(f"Export {export.pk} is {export.status}, not done; poll GET /api/v1/exports/{export.pk}.")
    return export


class ExportDownloadView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="exports_download", responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request: Request, export_id: int) -> FileResponse:
        export = _finished_export(export_id)
        return _serve(export, export.file, export.file.rsplit("/", 1)[-1])


class ExportBundleView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="exports_bundle",
        summary="The data file, its manifest and its images/ as one tar (streamed; 409 until done)",
        responses={(200, "application/x-tar"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, export_id: int) -> StreamingHttpResponse:
        export = _finished_export(export_id)
        data, manifest = services.export_root() / export.file, services.export_root() / export.manifest
        if not data.is_file() or not manifest.is_file():
            raise Http404("The export file is gone.")
        response = StreamingHttpResponse(
            tar_stream(bundle_members(data.parent, data, manifest)), content_type="application/x-tar"
        )
        response["Content-Disposition"] = f'attachment; filename="{data.stem}.tar"'
        return response


class ExportManifestView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="exports_manifest", responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request: Request, export_id: int) -> FileResponse:
        export = _finished_export(export_id)
        return _serve(export, export.manifest, export.manifest.rsplit("/", 1)[-1])


class DatasetListView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="datasets_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response({"results": [dataset_json(d) for d in Dataset.objects.order_by("name")]})

    @extend_schema(operation_id="datasets_create", request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        try:
            dataset = services.save_dataset(data=request.data, actor=request.user)
        except services.DatasetError as exc:
            return bad_request(exc.errors)
        return Response(dataset_json(dataset), status=status.HTTP_201_CREATED)


class DatasetDetailView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="datasets_retrieve", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, name: str) -> Response:
        return Response(dataset_json(get_object_or_404(Dataset, name=name)))

    @extend_schema(operation_id="datasets_update", request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
    def patch(self, request: Request, name: str) -> Response:
        dataset = get_object_or_404(Dataset, name=name)
        try:
            dataset = services.save_dataset(data=request.data, actor=request.user, dataset=dataset)
        except services.DatasetError as exc:
            return bad_request(exc.errors)
        return Response(dataset_json(dataset))

    @extend_schema(operation_id="datasets_destroy", responses={204: None})
    def delete(self, request: Request, name: str) -> Response:
        services.delete_dataset(dataset=get_object_or_404(Dataset, name=name), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class VersionListView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="dataset_versions_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, name: str) -> Response:
        dataset = get_object_or_404(Dataset, name=name)
        return Response({"results": [version_json(v) for v in dataset.versions.order_by("-number")]})

    @extend_schema(
        operation_id="dataset_versions_freeze",
        request=None,
        responses={202: OpenApiTypes.OBJECT},
        summary="Freeze a new version: 202 with it `freezing`; poll it until `ready` (a django-q2 task fills it)",
    )
    def post(self, request: Request, name: str) -> Response:
        dataset = get_object_or_404(Dataset, name=name)
        version = services.start_freeze(dataset=dataset, actor=request.user)
        return Response(version_json(version), status=status.HTTP_202_ACCEPTED)


class VersionDetailView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="dataset_versions_retrieve", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, name: str, number: int) -> Response:
        version = get_object_or_404(DatasetVersion.objects.select_related("dataset"), dataset__name=name, number=number)
        return Response(version_json(version))


urlpatterns = [
    path("exports", ExportCreateView.as_view(), name="api-exports"),
    path("exports/<int:export_id>", ExportDetailView.as_view(), name="api-export"),
    path("exports/<int:export_id>/download", ExportDownloadView.as_view(), name="api-export-download"),
    path("exports/<int:export_id>/manifest", ExportManifestView.as_view(), name="api-export-manifest"),
    path("exports/<int:export_id>/bundle", ExportBundleView.as_view(), name="api-export-bundle"),
    path("datasets", DatasetListView.as_view(), name="api-datasets"),
    path("datasets/<str:name>", DatasetDetailView.as_view(), name="api-dataset"),
    path("datasets/<str:name>/versions", VersionListView.as_view(), name="api-dataset-versions"),
    path("datasets/<str:name>/versions/<int:number>", VersionDetailView.as_view(), name="api-dataset-version"),
]
