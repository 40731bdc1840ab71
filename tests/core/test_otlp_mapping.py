"""core/otlp.py: span → step payload mapping for the conventions in the wild (pure, no database)."""

from __future__ import annotations

import json

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from reviewqueue.core.otlp import map_spans

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")


def value(v: object) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=value(x)) for k, x in v.items()]))
    return AnyValue(string_value=str(v))


def span(span_id: str, name: str, attrs: dict, parent: str = "", events: list | None = None, **kw) -> Span:
    return Span(
        trace_id=TRACE,
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        attributes=[KeyValue(key=k, value=value(v)) for k, v in attrs.items()],
        events=[
            Span.Event(name=n, attributes=[KeyValue(key=k, value=value(v)) for k, v in a.items()])
            for n, a in (events or [])
        ],
        **kw,
    )


def mapped(*spans: Span, confidence_attribute: str = "reviewqueue.confidence"):
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])])
    return map_spans(request, confidence_attribute=confidence_attribute)


def test_openinference_tool_span_takes_arguments_from_input_value_not_the_schema() -> None:
    result = mapped(
        span(
            "0000000000000001",
            "lookup",
            {
                "openinference.span.kind": "TOOL",
                "tool.name": "get_order",
                "tool.parameters": json.dumps({"type": "object", "properties": {"order_id": {"type": "string"}}}),
                "input.value": '{"order_id": "A1"}',
                "output.value": "shipped",
            },
        )
    )
    (step,) = result.payloads
    assert step["kind"] == "tool_call" and step["name"] == "get_order"
    assert step["output"]["tool_calls"][0]["function"] == {"name": "get_order", "arguments": '{"order_id": "A1"}'}
    assert step["metadata"]["tool_result"] == "shipped"


def test_pydantic_ai_v2_tool_span_and_legacy_events_and_evaluation_confidence() -> None:
    tool = span(
        "0000000000000002",
        "running tool",
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "refund",
            "tool_arguments": '{"amount": 5}',
            "tool_response": "ok",
        },
    )
    chat = span(
        "0000000000000003",
        "chat",
        {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"},
        events=[
            ("gen_ai.system.message", {"content": "Be nice."}),
            ("gen_ai.user.message", {"content": "Hi"}),
            ("gen_ai.choice", {"message": json.dumps({"content": "Hello!"})}),
            (
                "gen_ai.evaluation.result",
                {"gen_ai.evaluation.name": "confidence", "gen_ai.evaluation.score.value": 0.25},
            ),
        ],
    )
    result = mapped(tool, chat)
    by_kind = {p["kind"]: p for p in result.payloads}
    assert json.loads(by_kind["tool_call"]["output"]["tool_calls"][0]["function"]["arguments"]) == {"amount": 5}
    llm = by_kind["llm"]
    assert llm["name"] == "gpt-4o" and llm["metadata"]["provider"] == "openai"
    assert llm["input"] == [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}]
    assert llm["output"] == {"role": "assistant", "content": "Hello!"}
    assert llm["confidence"] == 0.25 and llm["metadata"]["confidence_source"] == "gen_ai.evaluation.result"


def test_genai_parts_tool_responses_images_and_custom_confidence_attribute() -> None:
    messages = [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "What is this?"},
                {"type": "uri", "modality": "image", "uri": "https://x/img.png"},
            ],
        },
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "ocr", "arguments": {"page": 1}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "result": {"text": "INVOICE"}}]},
    ]
    result = mapped(
        span(
            "0000000000000004",
            "chat",
            {"gen_ai.operation.name": "chat", "gen_ai.input.messages": messages, "my.score": "0.9"},
        ),
        confidence_attribute="my.score",
    )
    (step,) = result.payloads
    assert step["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/img.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "ocr", "arguments": '{"page": 1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"text": "INVOICE"}'},
    ]
    assert step["confidence"] == 0.9


def test_dropped_spans_are_counted_and_parents_skip_them_and_errors_are_kept() -> None:
    result = mapped(
        span("00000000000000a1", "POST /chat", {"http.request.method": "POST"}),
        span(
            "00000000000000a2",
            "embed",
            {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e"},
            parent="00000000000000a1",
        ),
        span(
            "00000000000000a3",
            "chat",
            {"gen_ai.operation.name": "chat", "error.type": "timeout"},
            parent="00000000000000a2",
            status=Status(code=Status.STATUS_CODE_ERROR, message="upstream timed out"),
        ),
        span("00000000000000a4", "invoke_agent x", {"gen_ai.operation.name": "invoke_agent"}),  # no output
        span("00000000000000a5", "chat", {"gen_ai.operation.name": "chat"}, parent="ffffffffffffffff"),
    )
    assert result.total == 5 and result.dropped == 3
    first, second = result.payloads
    assert "parent_id" not in first  # its ancestors were all dropped and are roots of this request
    assert first["metadata"]["error"] == {"message": "upstream timed out", "type": "timeout"}
    assert second["parent_id"] == "ffffffffffffffff"  # a parent from another request is kept as sent


def test_non_finite_values_become_strings() -> None:
    result = mapped(span("00000000000000b1", "chat", {"gen_ai.operation.name": "chat", "x.ratio": float("nan")}))
    assert result.payloads[0]["metadata"]["otel"]["attributes"]["x.ratio"] == "nan"
    json.dumps(result.payloads, allow_nan=False)
