"""POST /v1/traces — OTLP/HTTP trace ingestion (DESIGN §4, §6; OTLP spec "OTLP/HTTP").

- `Content-Type: application/x-protobuf` or `application/json` (OTLP/JSON), optionally
  `Content-Encoding: gzip`; anything else 415. Bodies over OTLP_MAX_BODY_BYTES after
  decompression answer 413.
- `Authorization: Bearer <agent API key>` (the exporters send it as a header:
  `OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer rq_…"`).
- Spans are mapped to step payloads by `core/otlp.py` and stored by the one ingest service
  (validation, idempotency on the span id, routing). Spans that fail validation are rejected
  one by one and reported in `partial_success` (the client must not retry them); the others are
  stored. Non-reviewable spans are dropped and counted (`X-Reviewqueue-Dropped-Spans`).
- The answer is an `ExportTraceServiceResponse` in the request's encoding; errors are a
  `google.rpc.Status` (protobuf) or `{"code", "message"}` (JSON), as the spec asks.
"""

from __future__ import annotations

import json
import logging
import zlib

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from rest_framework.exceptions import AuthenticationFailed

from reviewqueue.api.decisions import authenticate
from reviewqueue.core.ingest import IngestValidationError, ingest_steps
from reviewqueue.core.otlp import OtlpDecodeError, decode_request, map_spans

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# google.rpc.Code values used in error bodies.
INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED = 3, 16, 8


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def rpc_status(code: int, message: str) -> bytes:
    """A serialized google.rpc.Status {code = 1; message = 2} (no details)."""
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _error(status: int, code: int, message: str, *, json_body: bool) -> HttpResponse:
    if json_body:
        response = HttpResponse(json.dumps({"code": code, "message": message}), status=status, content_type=JSON)
    else:
        response = HttpResponse(rpc_status(code, message), status=status, content_type=PROTOBUF)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def _decompress(body: bytes, limit: int) -> bytes | None:
    """gunzip with a cap: None when the result would exceed `limit` bytes."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = decompressor.decompress(body, limit + 1)
    if len(data) > limit or decompressor.unconsumed_tail:
        return None
    return data


@csrf_exempt
def otlp_traces(request: HttpRequest) -> HttpResponse:
    media_type = request.content_type or ""
    json_body = media_type == JSON
    if request.method != "POST":
        return _error(405, INVALID_ARGUMENT, "use POST", json_body=json_body)
    if media_type not in (PROTOBUF, JSON):
        return _error(
            415,
            INVALID_ARGUMENT,
            f"unsupported Content-Type {media_type!r}; send {PROTOBUF} or {JSON}",
            json_body=False,
        )
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        return _error(
            415, INVALID_ARGUMENT, f"unsupported Content-Encoding {encoding!r}; use gzip", json_body=json_body
        )

    try:
        agent = authenticate(request)
    except AuthenticationFailed as exc:
        return _error(401, UNAUTHENTICATED, str(exc.detail), json_body=json_body)
    if agent is None:
        return _error(401, UNAUTHENTICATED, "Authorization: Bearer <agent API key> is required", json_body=json_body)

    limit = settings.OTLP_MAX_BODY_BYTES
    try:
        body = request.body
    except RequestDataTooBig:
        return _error(413, RESOURCE_EXHAUSTED, "request body too large", json_body=json_body)
    if encoding == "gzip":
        try:
            decompressed = _decompress(body, limit)
        except zlib.error as exc:
            return _error(400, INVALID_ARGUMENT, f"invalid gzip body: {exc}", json_body=json_body)
        if decompressed is None:
            return _error(
                413, RESOURCE_EXHAUSTED, f"body larger than {limit} bytes after decompression", json_body=json_body
            )
        body = decompressed
    elif len(body) > limit:
        return _error(413, RESOURCE_EXHAUSTED, f"body larger than {limit} bytes", json_body=json_body)

    try:
        message = decode_request(body, json_body=json_body)
    except OtlpDecodeError as exc:
        return _error(400, INVALID_ARGUMENT, str(exc), json_body=json_body)

    mapped = map_spans(message, confidence_attribute=agent.confidence_attribute)
    rejected, problems = store_spans(agent, mapped.payloads)
    answer = ExportTraceServiceResponse()
    if rejected or mapped.warnings:
        answer.partial_success.rejected_spans = rejected
        answer.partial_success.error_message = "; ".join([*problems, *mapped.warnings][:5])[:2000]
    if json_body:
        from google.protobuf.json_format import MessageToDict

        response = HttpResponse(json.dumps(MessageToDict(answer)), content_type=JSON)
    else:
        response = HttpResponse(answer.SerializeToString(), content_type=PROTOBUF)
    response["X-Reviewqueue-Spans"] = str(mapped.total)
    response["X-Reviewqueue-Dropped-Spans"] = str(mapped.dropped)
    return response


def store_spans(agent: object, payloads: list[dict]) -> tuple[int, list[str]]:
    """Ingest the payloads; entries that fail validation are left out (and reported), the rest
    are stored. Returns (rejected count, messages)."""
    rejected = 0
    problems: list[str] = []
    while payloads:
        try:
            ingest_steps(agent=agent, payloads=payloads)  # type: ignore[arg-type]
            break
        except IngestValidationError as exc:
            bad = set(exc.entry_errors)
            rejected += len(bad)
            for index in sorted(bad)[:3]:
                field_name, messages = next(iter(exc.entry_errors[index].items()))
                problems.append(f"span {payloads[index].get('external_id')}: {field_name}: {messages[0]}")
            payloads = [p for i, p in enumerate(payloads) if i not in bad]
    return rejected, problems
