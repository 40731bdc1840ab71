"""OpenAI chat fine-tuning (`openai-sft`) and preference fine-tuning (`openai-dpo`): FORMATS.md §1–2.

No extra keys are allowed in these records: review metadata goes to the manifest. Tool-call
arguments are JSON strings. Images (SFT only) are `image_url` data URLs in the last user message."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from evals.cases import Case
from evals.formats.base import (
    IMAGE_TYPES,
    ExportContext,
    Format,
    Unusable,
    content_text,
    dpo_skip_reason,
    sft_skip_reason,
)

ROLES = {"system", "user", "assistant", "tool", "function"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_IMAGES = 64
_PLAIN_KEYS, _PLAIN_ROLES = ("role", "content"), ("system", "user")
_TOOL_KEYS = ("role", "content", "tool_call_id")


def _assistant(message: dict[str, Any], *, weight: int | None = None) -> dict[str, Any]:
    content = message.get("content")
    text = content if type(content) is str else content_text(content)
    calls = message.get("tool_calls")
    if text:
        out: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            out["tool_calls"] = calls
    elif calls:
        out = {"role": "assistant", "tool_calls": calls}
    else:
        raise Unusable("empty assistant message")
    if weight is not None:
        out["weight"] = weight
    return out


def chat_messages(case: Case, *, weights: bool, images: bool, ctx: ExportContext) -> list[dict[str, Any]]:
    """The context in OpenAI fine-tuning shape: allowed keys per role, no empty content."""
    out: list[dict[str, Any]] = []
    append = out.append
    context_weight = 0 if weights else None
    for message in case.messages:
        role = message.get("role")
        if type(message.get("content")) is str and message["content"]:  # keep a message already in shape
            keys = tuple(message)
            if keys == _PLAIN_KEYS and role in _PLAIN_ROLES:
                append(message)
                continue
            if keys == _TOOL_KEYS and role == "tool" and type(message["tool_call_id"]) is str:
                append(message)
                continue
        if role not in ROLES:
            role = "system" if role == "developer" else "user"
        if role == "assistant":
            append(_assistant(message, weight=context_weight))
            continue
        content = message.get("content")
        if type(content) is not str:
            if role == "user" and isinstance(content, list):
                parts = [p for p in content if isinstance(p, dict) and p.get("type") in ("text", "image_url")]
                content = parts if images and any(p["type"] == "image_url" for p in parts) else content_text(parts)
            else:
                content = content_text(content)
        if not content:
            raise Unusable(f"empty {role} message in the context")
        if role == "tool":
            append({"role": role, "content": content, "tool_call_id": message.get("tool_call_id") or ""})
        elif role != "function" and message.get("name"):
            append({"role": role, "content": content, "name": message["name"]})
        else:
            append({"role": role, "content": content})
    if images and case.attachments:
        _attach_images(out, case, ctx)
    return out


def _attach_images(messages: list[dict[str, Any]], case: Case, ctx: ExportContext) -> None:
    users = [index for index, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise Unusable("images need a user message to go in")
    target = messages[users[-1]] = dict(messages[users[-1]])  # a copy: it may be the case's own dict
    parts = target["content"] if isinstance(target["content"], list) else [{"type": "text", "text": target["content"]}]
    for attachment in case.attachments[:MAX_IMAGES]:
        if attachment.get("content_type") not in IMAGE_TYPES:
            continue
        uri = ctx.image_data_uri(attachment)
        if uri:
            parts.append({"type": "image_url", "image_url": {"url": uri}})
    target["content"] = parts


@lru_cache(maxsize=4096)
def _tool_name_ok(name: str) -> bool:
    return TOOL_NAME.match(name) is not None


def declared_tools(case: Case, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The step's tools, plus a minimal declaration for any called function it did not declare."""
    tools = [t for t in (case.tools or ()) if isinstance(t, dict) and t.get("type") == "function"]
    declared = {t.get("function", {}).get("name") for t in tools}
    for message in messages:
        if "tool_calls" not in message:
            continue
        for call in message["tool_calls"]:
            name = call["function"]["name"]
            if not _tool_name_ok(name):
                raise Unusable(f"tool name {name!r} is not allowed by OpenAI")
            if name not in declared:
                declared.add(name)
                tools.append(
                    {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
                )
    return tools or None


def sft_records(case: Case, ctx: ExportContext) -> list[dict[str, Any]] | str:
    if (skip := sft_skip_reason(case)) is not None:
        return skip
    try:
        messages = chat_messages(case, weights=True, images=True, ctx=ctx)
        messages.append(_assistant(case.expected, weight=1))
        tools = declared_tools(case, messages)
    except Unusable as problem:
        return str(problem)
    record: dict[str, Any] = {"messages": messages}
    if tools:
        record["tools"] = tools
        record["parallel_tool_calls"] = False
    return [record]


def dpo_records(case: Case, ctx: ExportContext) -> list[dict[str, Any]] | str:
    if (skip := dpo_skip_reason(case)) is not None:
        return skip
    try:
        messages = chat_messages(case, weights=False, images=False, ctx=ctx)
        preferred, non_preferred = _assistant(case.expected), _assistant(case.rejected)
        tools = declared_tools(case, [*messages, preferred, non_preferred])
    except Unusable as problem:
        return str(problem)
    if not messages or messages[-1]["role"] not in ("user", "tool"):
        return "context does not end with a user or tool message"
    if preferred == non_preferred:
        return "correction equals the original"
    inputs: dict[str, Any] = {"messages": messages}
    if tools:
        inputs["tools"] = tools
        inputs["parallel_tool_calls"] = False
    return [{"input": inputs, "preferred_output": [preferred], "non_preferred_output": [non_preferred]}]


FORMATS = [
    Format("openai-sft", "jsonl", "jsonl", sft_records, min_records=10, description="OpenAI chat fine-tuning"),
    Format("openai-dpo", "jsonl", "jsonl", dpo_records, min_records=10, description="OpenAI preference fine-tuning"),
]
