"""Eval-case formats: Inspect AI (`inspect`), OpenAI Evals (`openai-evals`), promptfoo
(`promptfoo`) and DeepEval goldens (`deepeval`): FORMATS.md §5–8.

Each keeps the review in its own metadata field. Rejected steps become negative cases only in
promptfoo (`not-equals`); the other three have no way to say "not this", so they skip them."""

from __future__ import annotations

from typing import Any

from evals.cases import REJECTED, Case, dumps, is_tool_result, message_text
from evals.formats.base import IMAGE_TYPES, ExportContext, Format, arguments_object, content_text, review_metadata

NO_NEGATIVE = "rejected without correction (the format has no negative case)"


def _usable_expected(case: Case) -> str | None:
    """Why the case has no expected output for an eval, or None when it has one."""
    if case.expected is None:
        return NO_NEGATIVE if case.verdict == REJECTED else "no expected output"
    if is_tool_result(case.expected):
        return "tool result (context only)"
    if not message_text(case.expected).strip():
        return "empty expected output"
    return None


# --- Inspect AI ----------------------------------------------------------------------------------


def inspect_messages(case: Case, ctx: ExportContext) -> list[dict[str, Any]]:
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in case.messages:
        role = message.get("role")
        role = "system" if role == "developer" else role if role in ("system", "user", "assistant", "tool") else "user"
        if role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": content_text(message.get("content"))}
            calls = message.get("tool_calls") or []
            if calls:
                entry["tool_calls"] = []
                for call in calls:
                    names[call["id"]] = call["function"]["name"]
                    entry["tool_calls"].append(
                        {
                            "id": call["id"],
                            "function": call["function"]["name"],
                            "arguments": arguments_object(call["function"]["arguments"]),
                            "type": "function",
                        }
                    )
            out.append(entry)
        elif role == "tool":
            call_id = message.get("tool_call_id") or ""
            out.append(
                {
                    "role": "tool",
                    "content": content_text(message.get("content")),
                    "tool_call_id": call_id,
                    "function": message.get("name") or names.get(call_id, "tool"),
                }
            )
        else:
            out.append({"role": role, "content": content_text(message.get("content"))})
    images = [a for a in case.attachments if a.get("content_type") in IMAGE_TYPES]
    users = [m for m in out if m["role"] == "user"]
    if images and users:
        parts: list[dict[str, Any]] = [{"type": "text", "text": users[-1]["content"]}]
        for attachment in images:
            uri = ctx.image_data_uri(attachment)
            if uri:
                parts.append({"type": "image", "image": uri})
        users[-1]["content"] = parts
    return out


def inspect_records(case: Case, ctx: ExportContext) -> list[dict[str, Any]] | str:
    if problem := _usable_expected(case):
        return problem
    messages = inspect_messages(case, ctx)
    if not messages:
        return "empty input"
    last = messages[-1]
    if last["role"] == "assistant" and not last.get("tool_calls"):
        return "context ends with an assistant message"
    metadata = review_metadata(case)
    if case.rejected is not None:
        metadata["rejected_output"] = message_text(case.rejected)
    return [{"id": case.record_id, "input": messages, "target": message_text(case.expected), "metadata": metadata}]


# --- OpenAI Evals --------------------------------------------------------------------------------


def plain_chat(case: Case) -> list[dict[str, str]]:
    """system/user/assistant only: tool calls and results written out as text."""
    out: list[dict[str, str]] = []
    for message in case.messages:
        role = message.get("role")
        if role == "assistant":
            out.append({"role": "assistant", "content": message_text(message)})
        elif role == "tool":
            name = message.get("name") or "tool"
            out.append({"role": "user", "content": f"[{name} result] {content_text(message.get('content'))}"})
        else:
            role = "system" if role in ("system", "developer") else "user"
            out.append({"role": role, "content": content_text(message.get("content"))})
    return out


def openai_evals_records(case: Case, ctx: ExportContext) -> list[dict[str, Any]] | str:
    if problem := _usable_expected(case):
        return problem
    chat = plain_chat(case)
    if not chat:
        return "empty input"
    return [{"input": chat, "ideal": message_text(case.expected)}]


# --- promptfoo -----------------------------------------------------------------------------------


def _last_user_text(case: Case) -> str:
    for message in reversed(case.messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def _asserts_for(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls") or []
    if not calls:
        return [{"type": "equals", "value": message_text(message)}]
    asserts: list[dict[str, Any]] = [{"type": "is-valid-openai-tools-call"}]
    for call in calls:
        name = dumps(call["function"]["name"])
        asserts.append({"type": "javascript", "value": f"JSON.stringify(output).includes({name})"})
    return asserts


def promptfoo_records(case: Case, ctx: ExportContext) -> list[dict[str, Any]] | str:
    if case.expected is None and case.rejected is None:
        return "no output to assert on"
    if is_tool_result(case.expected) or is_tool_result(case.rejected):
        return "tool result (context only)"
    asserts: list[dict[str, Any]] = []
    if case.expected is not None:
        if not message_text(case.expected).strip():
            return "empty expected output"
        asserts.extend(_asserts_for(case.expected))
    if case.rejected is not None and message_text(case.rejected).strip():
        asserts.append({"type": "not-equals", "value": message_text(case.rejected)})
    if not asserts:
        return "no assertion possible"
    variables = {"input": _last_user_text(case), "messages": dumps(plain_chat(case))}
    images = [a["path"] for a in case.attachments]
    if images:
        variables["images"] = dumps(images)
    return [
        {
            "description": f"{case.record_id} {case.kind} {case.verdict}",
            "vars": variables,
            "assert": asserts,
            "metadata": review_metadata(case),
        }
    ]


# --- DeepEval ------------------------------------------------------------------------------------


def deepeval_records(case: Case, ctx: ExportContext) -> list[dict[str, Any]] | str:
    if problem := _usable_expected(case):
        return problem
    chat = plain_chat(case)
    last_user = max((i for i, m in enumerate(chat) if m["role"] == "user"), default=None)
    if last_user is None:
        return "no user message"
    expected = case.expected or {}
    record: dict[str, Any] = {
        "input": chat[last_user]["content"],
        "context": [f"{m['role']}: {m['content']}" for m in chat if m is not chat[last_user]],
        "name": case.record_id,
        "comments": case.reason,
        "additional_metadata": review_metadata(case),
    }
    if content_text(expected.get("content")):
        record["expected_output"] = content_text(expected.get("content"))
    if expected.get("tool_calls"):
        record["expected_tools"] = [
            {"name": c["function"]["name"], "input_parameters": arguments_object(c["function"]["arguments"])}
            for c in expected["tool_calls"]
        ]
    if case.attachments:
        record["additional_metadata"]["images"] = [a["path"] for a in case.attachments]
    if case.rejected is not None:
        record["additional_metadata"]["rejected_output"] = message_text(case.rejected)
    return [record]


FORMATS = [
    Format("inspect", "jsonl", "jsonl", inspect_records, description="Inspect AI json_dataset samples"),
    Format("openai-evals", "jsonl", "jsonl", openai_evals_records, description="OpenAI Evals Match samples"),
    Format("promptfoo", "jsonl", "jsonl", promptfoo_records, description="promptfoo tests (file://tests.jsonl)"),
    Format("deepeval", "jsonl", "jsonl", deepeval_records, description="DeepEval goldens"),
]
