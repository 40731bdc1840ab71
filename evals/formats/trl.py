"""TRL conversational SFT (`trl-sft`) and preference (`trl-dpo`): FORMATS.md §3–4.

Tool-call arguments are JSON objects (TRL's chat templates render them with `tojson`); tool
results carry the function `name`. `tools` is written as a JSON string, which both trainers
`json.loads`, so rows declaring different tools load into one Arrow column. Images go in an
`images` column as paths relative to the data file, with `{"type": "image"}` placeholders."""

from __future__ import annotations

from typing import Any

from evals.cases import Case, dumps
from evals.formats.base import (
    IMAGE_TYPES,
    ExportContext,
    Format,
    Unusable,
    arguments_object,
    content_text,
    dpo_skip_reason,
    sft_skip_reason,
)

ROLES = {"system", "user", "assistant", "tool"}


def _assistant(message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": content_text(message.get("content"))}
    calls = message.get("tool_calls") or []
    if calls:
        out["tool_calls"] = [
            {
                "type": "function",
                "function": {"name": c["function"]["name"], "arguments": arguments_object(c["function"]["arguments"])},
            }
            for c in calls
        ]
    if not out["content"] and not calls:
        raise Unusable("empty assistant message")
    return out


def trl_messages(case: Case) -> list[dict[str, Any]]:
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in case.messages:
        role = message.get("role")
        role = "system" if role == "developer" else role if role in ROLES else "user"
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                names[call["id"]] = call["function"]["name"]
            out.append(_assistant(message))
        elif role == "tool":
            name = message.get("name") or names.get(message.get("tool_call_id") or "", "tool")
            out.append({"role": "tool", "name": name, "content": content_text(message.get("content"))})
        else:
            out.append({"role": role, "content": content_text(message.get("content"))})
    return out


def _images(messages: list[dict[str, Any]], case: Case, ctx: ExportContext) -> list[str]:
    attachments = [a for a in case.attachments if a.get("content_type") in IMAGE_TYPES]
    users = [m for m in messages if m["role"] == "user"]
    if not attachments or not users:
        return []
    target = users[-1]
    paths = [ctx.image_file(a) for a in attachments]
    target["content"] = [*({"type": "image"} for _ in paths), {"type": "text", "text": target["content"]}]
    return paths


def _tools(case: Case) -> str | None:
    return dumps(case.tools) if case.tools else None


def sft_records(case: Case, ctx: ExportContext) -> list[dict[str, Any]] | str:
    if (skip := sft_skip_reason(case)) is not None:
        return skip
    try:
        messages = trl_messages(case)
        images = _images(messages, case, ctx)
        messages.append(_assistant(case.expected))
    except Unusable as problem:
        return str(problem)
    record: dict[str, Any] = {"messages": messages}
    tools = _tools(case)
    if tools:
        record["tools"] = tools
    if images:
        record["images"] = images
    return [record]


def dpo_records(case: Case, ctx: ExportContext) -> list[dict[str, Any]] | str:
    if (skip := dpo_skip_reason(case)) is not None:
        return skip
    try:
        prompt = trl_messages(case)
        images = _images(prompt, case, ctx)
        chosen, rejected = _assistant(case.expected), _assistant(case.rejected)
    except Unusable as problem:
        return str(problem)
    if not prompt or prompt[-1]["role"] not in ("user", "tool"):
        return "context does not end with a user or tool message"
    if chosen == rejected:
        return "correction equals the original"
    record: dict[str, Any] = {"prompt": prompt, "chosen": [chosen], "rejected": [rejected]}
    tools = _tools(case)
    if tools:
        record["tools"] = tools
    if images:
        record["images"] = images
    return [record]


FORMATS = [
    Format("trl-sft", "jsonl", "jsonl", sft_records, description="TRL SFTTrainer, conversational"),
    Format("trl-dpo", "jsonl", "jsonl", dpo_records, description="TRL DPOTrainer, explicit prompt"),
]
