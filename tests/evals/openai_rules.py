"""The OpenAI fine-tuning file rules of FORMATS.md §1–2 (the cookbook's checks plus the spec's),
as a checker: no offline validator exists in the openai SDK. Returns a list of problems."""

from __future__ import annotations

import json
import re
from typing import Any

SFT_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
ROLES = {"system", "user", "assistant", "tool", "function"}
COMMON_KEYS = {"role", "content", "name"}
ROLE_KEYS = {"assistant": {"weight", "tool_calls", "function_call", "refusal"}, "tool": {"tool_call_id"}}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
IMAGE_URL = re.compile(r"^(https?://|data:image/(jpeg|png|webp);base64,)")


def _check_messages(messages: Any, where: str, *, weights: bool, calls_seen: set[str], problems: list[str]) -> None:
    if not isinstance(messages, list) or not messages:
        problems.append(f"{where}: missing_messages_list")
        return
    for index, message in enumerate(messages):
        at = f"{where}[{index}]"
        role = message.get("role")
        if role not in ROLES:
            problems.append(f"{at}: unrecognized_role {role!r}")
            continue
        extra = set(message) - COMMON_KEYS - ROLE_KEYS.get(role, set())
        if extra:
            problems.append(f"{at}: message_unrecognized_key {sorted(extra)}")
        if "weight" in message and (not weights or message["weight"] not in (0, 1) or role != "assistant"):
            problems.append(f"{at}: bad weight")
        content = message.get("content")
        if role == "assistant" and message.get("tool_calls"):
            if content is not None and not isinstance(content, str):
                problems.append(f"{at}: bad content")
            for call in message["tool_calls"]:
                if set(call) != {"id", "type", "function"} or call["type"] != "function":
                    problems.append(f"{at}: bad tool_call shape")
                    continue
                args = call["function"].get("arguments")
                if not isinstance(args, str) or not isinstance(json.loads(args), dict):
                    problems.append(f"{at}: arguments must be a JSON string of an object")
                calls_seen.add(call["id"])
        elif role == "user" and isinstance(content, list):
            images = 0
            for part in content:
                if part.get("type") == "image_url":
                    images += 1
                    if not IMAGE_URL.match(part["image_url"]["url"]):
                        problems.append(f"{at}: bad image url")
                elif part.get("type") != "text" or not part.get("text"):
                    problems.append(f"{at}: bad content part")
            if images > 64:
                problems.append(f"{at}: more than 64 images")
        elif not isinstance(content, str) or not content:
            problems.append(f"{at}: missing_content")
        elif isinstance(content, list):
            problems.append(f"{at}: images only in user messages")
        if role == "tool" and message.get("tool_call_id") not in calls_seen:
            problems.append(f"{at}: tool_call_id answers no preceding call")


def _check_tools(record: dict[str, Any], messages: list[dict[str, Any]], where: str, problems: list[str]) -> None:
    declared = set()
    for tool in record.get("tools") or []:
        function = tool.get("function", {})
        if tool.get("type") != "function" or not TOOL_NAME.match(function.get("name", "")):
            problems.append(f"{where}: bad tool declaration")
        if function.get("parameters", {}).get("type") != "object":
            problems.append(f"{where}: tool parameters must be an object schema")
        declared.add(function.get("name"))
    if "parallel_tool_calls" in record and not isinstance(record["parallel_tool_calls"], bool):
        problems.append(f"{where}: parallel_tool_calls must be a boolean")
    for message in messages:
        for call in message.get("tool_calls") or []:
            if call["function"]["name"] not in declared:
                problems.append(f"{where}: {call['function']['name']} called but not declared in tools")


def check_sft_file(path: str) -> list[str]:
    problems: list[str] = []
    from pathlib import Path

    lines = Path(path).read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", "file must end with a newline"
    records = [json.loads(line) for line in lines[:-1]]
    if len(records) < 10:
        problems.append(f"only {len(records)} examples (minimum 10)")
    for number, record in enumerate(records, 1):
        where = f"line {number}"
        if not isinstance(record, dict):
            problems.append(f"{where}: data_type")
            continue
        if set(record) - SFT_KEYS:
            problems.append(f"{where}: extra keys {sorted(set(record) - SFT_KEYS)}")
        messages = record.get("messages")
        _check_messages(messages, where, weights=True, calls_seen=set(), problems=problems)
        if not isinstance(messages, list) or not messages:
            continue
        if messages[-1]["role"] != "assistant":
            problems.append(f"{where}: last message must be the assistant target")
        if not any(m.get("role") == "assistant" and m.get("weight", 1) == 1 for m in messages):
            problems.append(f"{where}: example_missing_assistant_message (no weight 1)")
        _check_tools(record, messages, where, problems)
    return problems


def check_dpo_file(path: str, *, minimum: int = 10) -> list[str]:
    problems: list[str] = []
    from pathlib import Path

    records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    if len(records) < minimum:
        problems.append(f"only {len(records)} examples (minimum {minimum})")
    for number, record in enumerate(records, 1):
        where = f"line {number}"
        if set(record) != {"input", "preferred_output", "non_preferred_output"}:
            problems.append(f"{where}: top-level keys {sorted(record)}")
            continue
        inputs = record["input"]
        if set(inputs) - {"messages", "tools", "parallel_tool_calls"}:
            problems.append(f"{where}: input keys {sorted(inputs)}")
        calls: set[str] = set()
        _check_messages(inputs.get("messages"), f"{where} input", weights=False, calls_seen=calls, problems=problems)
        if inputs["messages"][-1]["role"] not in ("user", "tool"):
            problems.append(f"{where}: input must end with a user or tool message")
        if any(isinstance(m.get("content"), list) for m in inputs["messages"]):
            problems.append(f"{where}: DPO is text only")
        outputs = []
        for key in ("preferred_output", "non_preferred_output"):
            value = record[key]
            if not isinstance(value, list) or len(value) != 1 or value[0].get("role") != "assistant":
                problems.append(f"{where}: {key} must be exactly one assistant message")
                continue
            _check_messages(value, f"{where} {key}", weights=False, calls_seen=set(calls), problems=problems)
            outputs.append(value[0])
        if len(outputs) == 2 and outputs[0] == outputs[1]:
            problems.append(f"{where}: outputs must differ")
        _check_tools(inputs, [*inputs["messages"], *outputs], where, problems)
    return problems
