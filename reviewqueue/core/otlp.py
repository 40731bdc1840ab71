"""OTLP traces → step payloads (DESIGN §6, /work/shared/OTLP.md).

`decode_request` turns an OTLP/HTTP body (protobuf or OTLP/JSON) into the official
`ExportTraceServiceRequest` message (opentelemetry-proto). `map_spans` turns its spans into the
same payload dicts an agent POSTs to /api/v1/steps, so that validation, idempotency, routing and
storage are the one implementation in `core/ingest.py`. Spans that carry nothing reviewable
(HTTP, DB, framework spans; embeddings; chains) are dropped and counted.

Kinds, first match wins (the priority Langfuse uses):
1. `langfuse.observation.type`, 2. `openinference.span.kind`, 3. `gen_ai.operation.name`,
4. a `gen_ai.tool.name` / `gen_ai.tool.call.id` → tool, 5. a model attribute → llm.
Agent spans become `final_answer` only when they carry output.

Steps are stored in our own form: `llm` input is a list of OpenAI-style messages and output the
assistant message (`content`, `tool_calls` with JSON-string arguments); a `tool_call` step's
output is the proposed call as an assistant `tool_calls` message (what a reviewer approves or
corrects), its result goes to `metadata.tool_result`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

DEFAULT_CONFIDENCE_ATTRIBUTE = "reviewqueue.confidence"
MAX_INLINE_IMAGE_CHARS = 2 * 1024 * 1024  # base64 images kept inline as data URLs up to this size

LLM_WORDS = {"generation", "llm", "chat", "text_completion", "generate_content", "completion", "generate"}
TOOL_WORDS = {"tool", "execute_tool"}
AGENT_WORDS = {"agent", "invoke_agent", "create_agent", "plan"}
RETRIEVAL_WORDS = {"retriever", "retrieval"}
MODEL_ATTRIBUTES = (
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
    "langfuse.observation.model.name",
    "model_name",
)
PROVIDER_ATTRIBUTES = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
# Attributes whose content became input/output: not copied again into metadata.
CONTENT_ATTRIBUTES = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.tool.definitions",
    "input.value",
    "output.value",
    "tool_arguments",
    "tool_response",
    "langfuse.observation.input",
    "langfuse.observation.output",
    "pydantic_ai.all_messages",
    "final_result",
    "gen_ai.prompt",
    "gen_ai.completion",
}
# Attributes copied to named metadata fields (model, provider, session, user, agent, tokens, tool).
MAPPED_ATTRIBUTES = {
    *MODEL_ATTRIBUTES,
    *PROVIDER_ATTRIBUTES,
    "gen_ai.conversation.id",
    "session.id",
    "langfuse.session.id",
    "user.id",
    "langfuse.user.id",
    "gen_ai.agent.name",
    "agent.name",
    "agent_name",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "gen_ai.tool.name",
    "tool.name",
    "gen_ai.tool.description",
    "tool.description",
    "reviewqueue.blocking",
}
CONTENT_PREFIXES = ("llm.input_messages.", "llm.output_messages.", "gen_ai.prompt.", "gen_ai.completion.", "llm.tools.")


class OtlpDecodeError(ValueError):
    pass


# --- decoding -------------------------------------------------------------------------------------


def _hex_to_b64(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        raise OtlpDecodeError(f"invalid id {value[:40]!r}: OTLP/JSON ids are hex strings") from None


def _rewrite_ids(document: Any) -> None:
    """OTLP/JSON ids are hex, protobuf's JSON mapping expects base64: rewrite them in place."""
    if not isinstance(document, dict):
        raise OtlpDecodeError("the body must be a JSON object (ExportTraceServiceRequest)")
    for resource_spans in document.get("resourceSpans") or document.get("resource_spans") or []:
        for scope_spans in (resource_spans or {}).get("scopeSpans") or (resource_spans or {}).get("scope_spans") or []:
            for span in (scope_spans or {}).get("spans") or []:
                if not isinstance(span, dict):
                    continue
                for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
                    if key in span:
                        span[key] = _hex_to_b64(span[key])
                for link in span.get("links") or []:
                    if isinstance(link, dict):
                        for key in ("traceId", "spanId", "trace_id", "span_id"):
                            if key in link:
                                link[key] = _hex_to_b64(link[key])


def decode_request(body: bytes, *, json_body: bool) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    if not json_body:
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpDecodeError(f"invalid protobuf ExportTraceServiceRequest: {exc}") from None
        return message
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OtlpDecodeError(f"malformed JSON: {exc}") from None
    _rewrite_ids(document)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpDecodeError(f"invalid OTLP/JSON: {exc}") from None
    return message


# --- attribute values -------------------------------------------------------------------------------


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as plain Python (kvlists become dicts, bytes base64 strings)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)  # NaN/Infinity cannot be stored as JSON
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


def _maybe_json(value: Any) -> Any:
    """Strings holding JSON objects or arrays are parsed; anything else is kept as it is."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "[") and text[-1:] in ("}", "]"):
            try:
                return _decode_json(text)
            except ValueError:
                return value
    return value


_decode_json = json.JSONDecoder(parse_constant=str).decode  # NaN/Infinity stay strings (JSON-storable)


def unflatten(attrs: dict[str, Any], prefix: str) -> Any:
    """`llm.input_messages.0.message.role` style keys under `prefix` → nested dicts/lists."""
    root: dict[str, Any] = {}
    found = False
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        found = True
        node = root
        parts = key[len(prefix) :].split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return _listify(root) if found else None


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


# --- messages -------------------------------------------------------------------------------------


def _arguments_string(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)


def _content_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _image_part(url: str) -> dict[str, Any] | None:
    if url.startswith("data:") and len(url) > MAX_INLINE_IMAGE_CHARS:
        return {"type": "text", "text": "[image omitted: larger than the inline limit]"}
    return {"type": "image_url", "image_url": {"url": url}}


def genai_message(message: Any) -> list[dict[str, Any]]:
    """One GenAI `{role, parts}` message (or an OpenAI-style one) → OpenAI-style message(s).
    A `tool_call_response` part becomes its own `tool` message."""
    if not isinstance(message, dict):
        return [{"role": "user", "content": _content_text(message)}]
    role = message.get("role") or "user"
    if "parts" not in message:  # already OpenAI-style (content, tool_calls, tool_call_id)
        out = {k: v for k, v in message.items() if k in ("role", "content", "name", "tool_calls", "tool_call_id")}
        out["role"] = role
        if isinstance(out.get("tool_calls"), list):
            out["tool_calls"] = [_openai_tool_call(c) for c in out["tool_calls"] if isinstance(c, dict)]
        return [out]
    texts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    tool_results: list[dict[str, Any]] = []
    for part in message.get("parts") or []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            texts.append({"type": "text", "text": _content_text(part.get("content", ""))})
        elif kind == "tool_call":
            tool_calls.append(
                {
                    "id": str(part.get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": str(part.get("name") or ""),
                        "arguments": _arguments_string(part.get("arguments")),
                    },
                }
            )
        elif kind == "tool_call_response":
            response = part.get("response", part.get("result"))
            tool_results.append(
                {"role": "tool", "tool_call_id": str(part.get("id") or ""), "content": _content_text(response)}
            )
        elif kind in ("uri", "blob") and part.get("modality", "image") == "image":
            if kind == "uri":
                image = _image_part(str(part.get("uri") or ""))
            else:
                mime = part.get("mime_type") or "image/png"
                image = _image_part(f"data:{mime};base64,{part.get('content') or ''}")
            if image:
                texts.append(image)
        elif kind == "file":
            texts.append({"type": "text", "text": f"[file {part.get('file_id', '')}]"})
    out: list[dict[str, Any]] = []
    if texts or tool_calls or not tool_results:
        if all(t["type"] == "text" for t in texts):
            content: Any = "\n".join(t["text"] for t in texts) if texts else None
        else:
            content = texts
        msg: dict[str, Any] = {"role": role, "content": content}
        if message.get("name"):
            msg["name"] = message["name"]
        if tool_calls:
            msg["tool_calls"] = tool_calls
        out.append(msg)
    out.extend(tool_results)
    return out


def _openai_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    return {
        "id": str(call.get("id") or ""),
        "type": "function",
        "function": {
            "name": str(function.get("name") or call.get("name") or ""),
            "arguments": _arguments_string(function.get("arguments", call.get("arguments"))),
        },
    }


def genai_messages(value: Any) -> list[dict[str, Any]] | None:
    value = _maybe_json(value)
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("messages", [value])
    if not isinstance(value, list):
        return [{"role": "user", "content": _content_text(value)}]
    messages: list[dict[str, Any]] = []
    for message in value:
        messages.extend(genai_message(_maybe_json(message)))
    return messages


def system_message(instructions: Any) -> dict[str, Any] | None:
    instructions = _maybe_json(instructions)
    if instructions is None:
        return None
    if isinstance(instructions, list):
        texts = [p.get("content", "") for p in instructions if isinstance(p, dict) and p.get("type") == "text"]
        return {"role": "system", "content": "\n".join(texts)}
    return {"role": "system", "content": _content_text(instructions)}


def openinference_messages(flat: Any) -> list[dict[str, Any]] | None:
    """Unflattened `llm.{input,output}_messages` → OpenAI-style messages."""
    if not isinstance(flat, list):
        return None
    messages = []
    for entry in flat:
        message = entry.get("message", {}) if isinstance(entry, dict) else {}
        out: dict[str, Any] = {"role": message.get("role") or "user"}
        contents = message.get("contents")
        if isinstance(contents, list):
            parts = []
            for item in contents:
                content = item.get("message_content", {}) if isinstance(item, dict) else {}
                if content.get("type") == "image":
                    url = ((content.get("image") or {}).get("image") or {}).get("url")
                    if url and (image := _image_part(url)):
                        parts.append(image)
                elif "text" in content:
                    parts.append({"type": "text", "text": _content_text(content["text"])})
            if parts and all(p["type"] == "text" for p in parts):
                out["content"] = "\n".join(p["text"] for p in parts)
            else:
                out["content"] = parts
        else:
            out["content"] = message.get("content")
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            out["tool_calls"] = [
                {
                    "id": str((c.get("tool_call") or {}).get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": str(((c.get("tool_call") or {}).get("function") or {}).get("name") or ""),
                        "arguments": _arguments_string(
                            ((c.get("tool_call") or {}).get("function") or {}).get("arguments")
                        ),
                    },
                }
                for c in calls
                if isinstance(c, dict)
            ]
        if message.get("tool_call_id"):
            out["tool_call_id"] = message["tool_call_id"]
        messages.append(out)
    return messages


def _value_messages(value: Any, role: str) -> list[dict[str, Any]] | None:
    """`input.value` / `output.value`: messages when it holds them, else one message of text."""
    if value is None:
        return None
    parsed = _maybe_json(value)
    if isinstance(parsed, list) and parsed and all(isinstance(m, dict) and "role" in m for m in parsed):
        return genai_messages(parsed)
    if isinstance(parsed, dict) and isinstance(parsed.get("messages"), list):
        return genai_messages(parsed["messages"])
    return [{"role": role, "content": _content_text(parsed)}]


def _event_messages(events: list[tuple[str, dict[str, Any]]]) -> tuple[list | None, list | None]:
    """Older instrumentations: messages in span events."""
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for name, attrs in events:
        if name == "gen_ai.client.inference.operation.details":
            inputs.extend(genai_messages(attrs.get("gen_ai.input.messages")) or [])
            outputs.extend(genai_messages(attrs.get("gen_ai.output.messages")) or [])
        elif name in (
            "gen_ai.system.message",
            "gen_ai.user.message",
            "gen_ai.assistant.message",
            "gen_ai.tool.message",
        ):
            role = name.split(".")[1]
            message = {"role": role, "content": _content_text(_maybe_json(attrs.get("content", "")))}
            if attrs.get("tool_calls"):
                message["tool_calls"] = [_openai_tool_call(c) for c in _maybe_json(attrs["tool_calls"]) or []]
            if attrs.get("id") and role == "tool":
                message["tool_call_id"] = str(attrs["id"])
            inputs.append(message)
        elif name == "gen_ai.choice":
            message = _maybe_json(attrs.get("message"))
            if isinstance(message, dict):
                outputs.extend(genai_message({"role": "assistant", **message}))
            elif "content" in attrs:
                outputs.append({"role": "assistant", "content": _content_text(attrs["content"])})
        elif name == "gen_ai.content.prompt":
            inputs.extend(genai_messages(attrs.get("gen_ai.prompt")) or [])
        elif name == "gen_ai.content.completion":
            outputs.extend(genai_messages(attrs.get("gen_ai.completion")) or [])
    return inputs or None, outputs or None


def _assistant_output(messages: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The first assistant message of the output (the first choice)."""
    if not messages:
        return None
    for message in messages:
        if message.get("role") == "assistant":
            return message
    return {**messages[0], "role": "assistant"}


# --- confidence -----------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def confidence_of(attrs: dict[str, Any], events: list[tuple[str, dict[str, Any]]], attribute: str) -> tuple[Any, str]:
    """(raw confidence value or None, where it came from), from the carriers of OTLP.md §4 in order."""
    if attribute in attrs:
        return attrs[attribute], attrs.get(f"{attribute}.source") or "attribute"
    for name, event_attrs in events:
        if name == "gen_ai.evaluation.result" and event_attrs.get("gen_ai.evaluation.name") == "confidence":
            return event_attrs.get("gen_ai.evaluation.score.value"), "gen_ai.evaluation.result"
    for prefix, inner in (("annotations.", "annotation"), ("evaluations.", "evaluation")):
        entries = unflatten(attrs, prefix)
        if isinstance(entries, list):
            for entry in entries:
                data = entry.get(inner, {}) if isinstance(entry, dict) else {}
                if data.get("name") == "confidence":
                    return data.get("score"), str(data.get("annotator_kind") or prefix.rstrip("."))
    if "langfuse.observation.metadata.confidence" in attrs:
        return attrs["langfuse.observation.metadata.confidence"], "langfuse.metadata"
    return None, ""


# --- spans → payloads -----------------------------------------------------------------------------


def _first(attrs: dict[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value not in (None, ""):
            return value
    return None


def span_kind(attrs: dict[str, Any]) -> str | None:
    """Our step kind for a span, or None when it is not reviewable."""
    for key in ("langfuse.observation.type", "openinference.span.kind", "gen_ai.operation.name"):
        word = attrs.get(key)
        if isinstance(word, str) and word:
            word = word.lower()
            if word in LLM_WORDS:
                return "llm"
            if word in TOOL_WORDS:
                return "tool_call"
            if word in AGENT_WORDS:
                return "final_answer"
            if word in RETRIEVAL_WORDS:
                return "retrieval"
            return None  # a known carrier naming something else (embedding, chain, span, ...)
    if "gen_ai.tool.name" in attrs or "gen_ai.tool.call.id" in attrs:
        return "tool_call"
    if any(key in attrs for key in MODEL_ATTRIBUTES):
        return "llm"
    return None


@dataclass
class MappedSpans:
    payloads: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    dropped: int = 0  # not reviewable (HTTP, DB, framework spans)
    warnings: list[str] = field(default_factory=list)


def _hex(raw: bytes) -> str:
    return binascii.hexlify(raw).decode()


def map_spans(
    request: ExportTraceServiceRequest, *, confidence_attribute: str = DEFAULT_CONFIDENCE_ATTRIBUTE
) -> MappedSpans:
    result = MappedSpans()
    candidates: list[tuple[str, str, str, dict[str, Any] | None]] = []  # (span id, parent, kind, payload)
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service = {
            k: v
            for k, v in (("name", resource.get("service.name")), ("version", resource.get("service.version")))
            if v is not None
        }
        for scope_spans in resource_spans.scope_spans:
            scope = {"name": scope_spans.scope.name, "version": scope_spans.scope.version}
            for span in scope_spans.spans:
                result.total += 1
                span_id = _hex(span.span_id)
                parent = _hex(span.parent_span_id) if span.parent_span_id else ""
                attrs = attributes(span.attributes)
                kind = span_kind(attrs)
                payload = None
                if kind is not None:
                    payload = _span_payload(
                        span, attrs, kind, span_id, resource, service, scope, confidence_attribute, result
                    )
                candidates.append((span_id, parent, kind or "", payload))
    # Parents: the nearest reviewable ancestor among the spans of this request, else the raw parent.
    # The session (conversation) is often on the root span only: inherit it trace-wide.
    sessions: dict[str, Any] = {}
    for _, _, _, payload in candidates:
        if payload is not None and "session_id" in payload["metadata"]:
            sessions.setdefault(payload["trace_id"], payload["metadata"]["session_id"])
    for _, _, _, payload in candidates:
        if payload is not None and payload["trace_id"] in sessions:
            payload["metadata"].setdefault("session_id", sessions[payload["trace_id"]])
    parents = {span_id: parent for span_id, parent, _, _ in candidates}
    kept = {span_id for span_id, _, _, payload in candidates if payload is not None}
    for _span_id, parent, _, payload in candidates:
        if payload is None:
            result.dropped += 1
            continue
        ancestor, seen = parent, set()
        while ancestor and ancestor not in kept and ancestor in parents and ancestor not in seen:
            seen.add(ancestor)
            ancestor = parents[ancestor]
        if ancestor:
            payload["parent_id"] = ancestor
        result.payloads.append(payload)
    return result


def _span_payload(
    span: Any,
    attrs: dict[str, Any],
    kind: str,
    span_id: str,
    resource: dict[str, Any],
    service: dict[str, Any],
    scope: dict[str, Any],
    confidence_attribute: str,
    result: MappedSpans,
) -> dict[str, Any] | None:
    events = [(event.name, attributes(event.attributes)) for event in span.events]
    event_inputs, event_outputs = _event_messages(events) if events else (None, None)
    model = _first(attrs, MODEL_ATTRIBUTES)
    metadata: dict[str, Any] = {}
    step_input: Any = None
    output: Any = None
    name = span.name

    if kind == "llm":
        name = model or span.name
        step_input = (
            genai_messages(_first(attrs, ("langfuse.observation.input", "gen_ai.input.messages")))
            or openinference_messages(unflatten(attrs, "llm.input_messages."))
            or _value_messages(attrs.get("input.value"), "user")
            or event_inputs
            or openinference_messages_flat_prompt(attrs, "gen_ai.prompt.")
        )
        system = system_message(attrs.get("gen_ai.system_instructions"))
        if system is not None:
            step_input = [system, *(step_input or [])]
        output = _assistant_output(
            genai_messages(_first(attrs, ("langfuse.observation.output", "gen_ai.output.messages")))
            or openinference_messages(unflatten(attrs, "llm.output_messages."))
            or _value_messages(attrs.get("output.value"), "assistant")
            or event_outputs
            or openinference_messages_flat_prompt(attrs, "gen_ai.completion.")
        )
        tools = _maybe_json(attrs.get("gen_ai.tool.definitions"))
        if isinstance(tools, list) and step_input is not None:
            step_input = {
                "messages": step_input,
                "tools": [
                    {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}}
                    for t in tools
                    if isinstance(t, dict)
                ],
            }
    elif kind == "tool_call":
        tool = _first(attrs, ("gen_ai.tool.name", "tool.name")) or span.name
        name = tool
        call_id = _first(
            attrs, ("gen_ai.tool.call.id", "tool.id", "tool_call.id", "langfuse.observation.metadata.tool_call_id")
        )
        parameters = _maybe_json(attrs.get("tool.parameters"))
        if isinstance(parameters, dict) and ("properties" in parameters or parameters.get("type") == "object"):
            parameters = None  # a JSON Schema (the definition), not the arguments
        arguments = _first(
            attrs, ("gen_ai.tool.call.arguments", "input.value", "tool_arguments", "langfuse.observation.input")
        )
        arguments = _maybe_json(arguments if arguments is not None else parameters)
        output = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": str(call_id or ""),
                    "type": "function",
                    "function": {"name": str(tool), "arguments": _arguments_string(arguments)},
                }
            ],
        }
        tool_result = _first(
            attrs, ("gen_ai.tool.call.result", "output.value", "tool_response", "langfuse.observation.output")
        )
        if tool_result is not None:
            metadata["tool_result"] = _maybe_json(tool_result)
        if attrs.get("gen_ai.tool.description") or attrs.get("tool.description"):
            metadata["tool_description"] = attrs.get("gen_ai.tool.description") or attrs.get("tool.description")
    elif kind == "final_answer":
        name = _first(attrs, ("gen_ai.agent.name", "agent.name", "agent_name")) or span.name
        raw_output = _first(
            attrs, ("gen_ai.output.messages", "output.value", "langfuse.observation.output", "final_result")
        )
        if raw_output is None and not event_outputs:
            return None  # an agent span without output: nothing to review
        step_input = (
            genai_messages(_first(attrs, ("gen_ai.input.messages", "langfuse.observation.input")))
            or _value_messages(attrs.get("input.value"), "user")
            or event_inputs
        )
        messages = genai_messages(raw_output) if attrs.get("gen_ai.output.messages") is not None else None
        output = _assistant_output(messages) if messages else None
        if output is None:
            output = (
                _assistant_output(_value_messages(raw_output, "assistant"))
                if raw_output is not None
                else _assistant_output(event_outputs)
            )
    else:  # retrieval
        step_input = _maybe_json(_first(attrs, ("input.value", "gen_ai.retrieval.query.text")))
        output = _maybe_json(attrs.get("output.value"))
        documents = unflatten(attrs, "retrieval.documents.")
        if output is None and documents is not None:
            output = documents

    # metadata: where it came from, the model, the session, tokens, status, and the raw attributes
    metadata["otel"] = {
        "span_name": span.name,
        "span_kind": span.kind,
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        # Everything not already mapped, for audit and re-mapping.
        "attributes": {
            k: v
            for k, v in attrs.items()
            if k not in CONTENT_ATTRIBUTES
            and k not in MAPPED_ATTRIBUTES
            and k != confidence_attribute
            and not k.startswith(CONTENT_PREFIXES)
        },
    }
    if scope["name"]:
        metadata["otel"]["scope"] = scope
    if span.status.code == 2:
        metadata["error"] = {"message": span.status.message, "type": attrs.get("error.type")}
        for event_name, event_attrs in events:
            if event_name == "exception":
                metadata["error"]["exception"] = {
                    "type": event_attrs.get("exception.type"),
                    "message": event_attrs.get("exception.message"),
                }
                break
    if service:
        metadata["service"] = service
    other_resource = {k: v for k, v in resource.items() if k not in ("service.name", "service.version")}
    if other_resource:
        metadata["resource"] = other_resource
    if model:
        metadata["model"] = model
    provider = _first(attrs, PROVIDER_ATTRIBUTES)
    if provider:
        metadata["provider"] = provider
    session = _first(attrs, ("gen_ai.conversation.id", "session.id", "langfuse.session.id"))
    if session:
        metadata["session_id"] = session
    user = _first(attrs, ("user.id", "langfuse.user.id"))
    if user:
        metadata["user_id"] = user
    agent_name = _first(attrs, ("gen_ai.agent.name", "agent.name", "agent_name"))
    if agent_name:
        metadata["agent_name"] = agent_name
    tokens = {
        key: value
        for key, value in (
            ("input", _first(attrs, ("gen_ai.usage.input_tokens", "llm.token_count.prompt"))),
            ("output", _first(attrs, ("gen_ai.usage.output_tokens", "llm.token_count.completion"))),
        )
        if value is not None
    }
    if tokens:
        metadata["tokens"] = tokens

    raw_confidence, source = confidence_of(attrs, events, confidence_attribute)
    confidence = None
    if raw_confidence is not None:
        number = _number(raw_confidence)
        if number is not None and math.isfinite(number) and 0 <= number <= 1:
            confidence = number
            metadata["confidence_source"] = source
        else:
            warning = f"span {span_id}: confidence {raw_confidence!r} is not a number in [0, 1]; stored as null"
            metadata["ingest_warnings"] = [warning]
            result.warnings.append(warning)

    payload: dict[str, Any] = {
        "external_id": span_id,
        "trace_id": _hex(span.trace_id),
        "kind": kind,
        "name": str(name)[:200],
        "input": step_input,
        "output": output,
        "confidence": confidence,
        "metadata": metadata,
    }
    if attrs.get("reviewqueue.blocking") is True:
        payload["blocking"] = True
    return payload


def openinference_messages_flat_prompt(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]] | None:
    """Deprecated flattened `gen_ai.prompt.N.role/content` (and `gen_ai.completion.N...`)."""
    entries = unflatten(attrs, prefix)
    if not isinstance(entries, list):
        return None
    return [
        {"role": e.get("role") or "user", "content": e.get("content")} for e in entries if isinstance(e, dict)
    ] or None
