"""POST /v1/traces: OTLP/HTTP from the real OpenTelemetry SDK exporter (protobuf, gzip) and
hand-written OTLP/JSON, mapped to steps and routed like the REST path (DESIGN §6)."""

from __future__ import annotations

import gzip
import json

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from reviewqueue.core.models import ApiKey, Step
from reviewqueue.review.models import ReviewItem
from tests.factories import AgentFactory, QueueFactory, RoutingRuleFactory

URL = "/v1/traces"


@pytest.fixture
def agent_key(db):
    agent = AgentFactory(name="otel-agent")
    return agent, ApiKey.issue(agent)[1]


def record_agent_run() -> list:
    """An instrumented agent run: agent → chat (GenAI), tool (GenAI), an HTTP span, and an
    OpenInference LLM span under the HTTP span."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", "service.version": "1.4.2"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("my.agent", "0.1")
    with tracer.start_as_current_span("invoke_agent support-bot") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.agent.name", "support-bot")
        root.set_attribute("gen_ai.conversation.id", "conv-7")
        root.set_attribute(
            "gen_ai.input.messages",
            json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Refund A1?"}]}]),
        )
        with tracer.start_as_current_span("chat gpt-4o") as chat:
            chat.set_attribute("gen_ai.operation.name", "chat")
            chat.set_attribute("gen_ai.request.model", "gpt-4o")
            chat.set_attribute("gen_ai.provider.name", "openai")
            chat.set_attribute("gen_ai.system_instructions", json.dumps([{"type": "text", "content": "Be brief."}]))
            chat.set_attribute(
                "gen_ai.input.messages",
                json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Refund A1?"}]}]),
            )
            chat.set_attribute(
                "gen_ai.output.messages",
                json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [
                                {"type": "tool_call", "id": "call_1", "name": "refund", "arguments": {"order": "A1"}}
                            ],
                            "finish_reason": "tool_call",
                        }
                    ]
                ),
            )
            chat.set_attribute("reviewqueue.confidence", 0.3)
            chat.set_attribute("gen_ai.usage.input_tokens", 12)
        with tracer.start_as_current_span("execute_tool refund") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
            tool.set_attribute("gen_ai.tool.name", "refund")
            tool.set_attribute("gen_ai.tool.call.id", "call_1")
            tool.set_attribute("gen_ai.tool.call.arguments", '{"order": "A1", "amount_eur": 40}')
            tool.set_attribute("gen_ai.tool.call.result", '{"ok": true}')
            tool.set_attribute("reviewqueue.confidence", 0.95)
        with tracer.start_as_current_span("GET /orders/A1") as http:
            http.set_attribute("http.request.method", "GET")
            with tracer.start_as_current_span("ChatCompletion") as oi:
                oi.set_attribute("openinference.span.kind", "LLM")
                oi.set_attribute("llm.model_name", "claude-3-5-sonnet")
                oi.set_attribute("llm.input_messages.0.message.role", "user")
                oi.set_attribute("llm.input_messages.0.message.content", "Summarise the order")
                oi.set_attribute("llm.output_messages.0.message.role", "assistant")
                oi.set_attribute("llm.output_messages.0.message.content", "Order A1: shipped.")
        root.set_attribute(
            "gen_ai.output.messages",
            json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Refunded."}]}]),
        )
    provider.shutdown()
    return list(memory.get_finished_spans())


def exporter(live_server, key: str, *, gzip_body: bool) -> OTLPSpanExporter:
    return OTLPSpanExporter(
        endpoint=live_server.url + URL,
        headers={"Authorization": f"Bearer {key}"},
        compression=Compression.Gzip if gzip_body else Compression.NoCompression,
        timeout=10,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("gzip_body", [True, False])
def test_sdk_exporter_spans_become_routed_steps(live_server, agent_key, gzip_body: bool) -> None:
    agent, key = agent_key
    RoutingRuleFactory(
        name="low", conditions=[{"field": "confidence", "op": "lt", "value": 0.5}], queue=QueueFactory(slug="triage")
    )
    spans = record_agent_run()
    assert exporter(live_server, key, gzip_body=gzip_body).export(spans) == SpanExportResult.SUCCESS

    steps = {s.kind + ":" + s.name: s for s in Step.objects.filter(agent=agent)}
    assert set(steps) == {"final_answer:support-bot", "llm:gpt-4o", "tool_call:refund", "llm:claude-3-5-sonnet"}
    by_name = {span.name: span for span in spans}
    root_id = format(by_name["invoke_agent support-bot"].context.span_id, "016x")
    trace_id = format(by_name["invoke_agent support-bot"].context.trace_id, "032x")

    chat = steps["llm:gpt-4o"]
    assert chat.external_id == format(by_name["chat gpt-4o"].context.span_id, "016x")
    assert chat.trace.external_id == trace_id and chat.parent_external_id == root_id
    assert chat.input == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund A1?"}]
    assert chat.output == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "refund", "arguments": '{"order": "A1"}'}}
        ],
    }
    assert chat.confidence == 0.3 and chat.status == "pending_review"
    assert ReviewItem.objects.get(step=chat).queue.slug == "triage"
    assert chat.metadata["service"] == {"name": "support-bot", "version": "1.4.2"}
    assert chat.metadata["session_id"] == "conv-7" and chat.metadata["model"] == "gpt-4o"  # session from the root
    assert chat.metadata["tokens"] == {"input": 12} and chat.metadata["provider"] == "openai"

    tool = steps["tool_call:refund"]
    assert tool.output["tool_calls"][0]["function"] == {
        "name": "refund",
        "arguments": '{"order": "A1", "amount_eur": 40}',
    }
    assert tool.metadata["tool_result"] == {"ok": True} and tool.status == "auto_approved"

    final = steps["final_answer:support-bot"]
    assert final.parent_external_id == "" and final.output == {"role": "assistant", "content": "Refunded."}
    assert final.input == [{"role": "user", "content": "Refund A1?"}]

    # The OpenInference span's parent (the HTTP span) was dropped: it points at the agent span.
    oi = steps["llm:claude-3-5-sonnet"]
    assert oi.parent_external_id == root_id and oi.parent_id == final.pk
    assert oi.input == [{"role": "user", "content": "Summarise the order"}]
    assert oi.output == {"role": "assistant", "content": "Order A1: shipped."}
    assert oi.confidence is None and oi.status == "auto_approved"  # "confidence lt 0.5" does not hold for null

    # Re-sending the same spans is idempotent (span id = external id).
    assert exporter(live_server, key, gzip_body=gzip_body).export(spans) == SpanExportResult.SUCCESS
    assert Step.objects.filter(agent=agent).count() == 4


def otlp_json(spans: list[dict]) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-bot"}}]},
                "scopeSpans": [{"scope": {"name": "manual"}, "spans": spans, "unknownField": 1}],
            }
        ]
    }


def json_span(span_id: str, name: str, attributes: dict, parent: str = "") -> dict:
    def value(v: object) -> dict:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        if isinstance(v, float):
            return {"doubleValue": v}
        if isinstance(v, list):
            return {"arrayValue": {"values": [value(x) for x in v]}}
        if isinstance(v, dict):
            return {"kvlistValue": {"values": [{"key": k, "value": value(x)} for k, x in v.items()]}}
        return {"stringValue": v}

    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": 3,
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
        "attributes": [{"key": k, "value": value(v)} for k, v in attributes.items()],
    }


@pytest.mark.django_db(transaction=True)
def test_otlp_json_with_structured_messages_and_partial_success(live_server, agent_key) -> None:
    agent, key = agent_key
    body = otlp_json(
        [
            json_span(
                "eee19b7ec3c1b174",
                "chat",
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    # structured (kvlist) messages, as the SDK's extended attributes send them
                    "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
                    "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": "hello"}]}],
                    "reviewqueue.confidence": 0.75,
                    "reviewqueue.blocking": True,
                },
            ),
            json_span("eee19b7ec3c1b175", "chat\u0000bad", {"gen_ai.operation.name": "chat"}),
            json_span("eee19b7ec3c1b176", "SELECT orders", {"db.system": "postgresql"}),
            json_span("eee19b7ec3c1b177", "chat", {"gen_ai.operation.name": "chat", "reviewqueue.confidence": 7}),
        ]
    )
    response = requests.post(
        live_server.url + URL,
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    answer = response.json()
    assert answer["partialSuccess"]["rejectedSpans"] == "1"
    assert "eee19b7ec3c1b175: name: must not contain NUL" in answer["partialSuccess"]["errorMessage"]
    assert "confidence 7" in answer["partialSuccess"]["errorMessage"]
    assert response.headers["X-Reviewqueue-Dropped-Spans"] == "1"

    chat = Step.objects.get(agent=agent, external_id="eee19b7ec3c1b174")
    assert chat.trace.external_id == "5b8efff798038103d269b633813fc60c"
    assert chat.input == [{"role": "user", "content": "hi"}] and chat.output == {
        "role": "assistant",
        "content": "hello",
    }
    assert chat.confidence == 0.75 and chat.blocking is True and chat.metadata["service"] == {"name": "json-bot"}
    bad_confidence = Step.objects.get(agent=agent, external_id="eee19b7ec3c1b177")
    assert bad_confidence.confidence is None and bad_confidence.metadata["ingest_warnings"]
    assert Step.objects.filter(agent=agent).count() == 2


@pytest.mark.django_db
def test_protobuf_answer_and_errors(client, agent_key, settings) -> None:
    _, key = agent_key
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    empty = ExportTraceServiceRequest(resource_spans=[ResourceSpans()]).SerializeToString()  # no spans
    ok = client.post(URL, empty, content_type="application/x-protobuf", **auth)
    assert ok.status_code == 200 and ok["Content-Type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(ok.content).HasField("partial_success")

    assert client.post(URL, "x", content_type="text/plain", **auth).status_code == 415
    assert (
        client.post(URL, empty, content_type="application/x-protobuf", HTTP_CONTENT_ENCODING="br", **auth).status_code
        == 415
    )
    assert client.post(URL, empty, content_type="application/x-protobuf").status_code == 401
    bad_key = client.post(URL, "{}", content_type="application/json", HTTP_AUTHORIZATION="Bearer nope")
    assert bad_key.status_code == 401 and bad_key.json()["message"] == "Invalid API key."
    malformed = client.post(URL, "{", content_type="application/json", **auth)
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["message"]
    bad_id = client.post(
        URL, json.dumps(otlp_json([json_span("zz", "x", {})])), content_type="application/json", **auth
    )
    assert bad_id.status_code == 400 and "hex" in bad_id.json()["message"]
    garbage = client.post(URL, b"\xff\xff\xff", content_type="application/x-protobuf", **auth)
    assert garbage.status_code == 400

    settings.OTLP_MAX_BODY_BYTES = 1000
    bomb = gzip.compress(b"\n" + b"\x00" * 100_000)
    too_big = client.post(URL, bomb, content_type="application/x-protobuf", HTTP_CONTENT_ENCODING="gzip", **auth)
    assert too_big.status_code == 413
