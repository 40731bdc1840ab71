"""The canonical eval case: one decided step, in our own (OpenAI-style) message form.

Every export format is a function of a `Case` (formats/), and every source (the live steps, a
frozen DatasetVersion) yields `Case`s, so the mapping of FORMATS.md §0 lives in one place:

- approved:  expected = the agent's output, rejected = None
- corrected: expected = the correction,     rejected = the agent's output
- rejected:  expected = None,               rejected = the agent's output
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

# Verdicts as stored on Step.status / Decision.verdict, plus auto_approved for undecided steps.
APPROVED, CORRECTED, REJECTED, AUTO_APPROVED = "approved", "corrected", "rejected", "auto_approved"


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(slots=True)
class Case:
    step_id: int
    item_id: int | None
    agent: str
    queue: str
    kind: str
    name: str
    verdict: str
    auto: bool
    reason: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    expected: dict[str, Any] | None
    rejected: dict[str, Any] | None
    split: str
    labels: dict[str, Any] = field(default_factory=dict)
    reviewers: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    confidence: float | None = None
    decided: datetime | None = None
    version_id: int | None = None
    content_hash: str = ""
    redactions: dict[str, int] = field(default_factory=dict)

    @property
    def record_id(self) -> str:
        return f"rq-step-{self.step_id}"

    @property
    def decided_at(self) -> str | None:
        """When the step was decided, in ISO 8601 (written only by the formats that show it)."""
        return self.decided.isoformat() if self.decided is not None else None


def split_for(step_id: int, test_ratio: float) -> str:
    """Stable train/test side of a step: a hash of its id, so it never moves between versions.
    The side is "test" when int(digest) / 2**64 < test_ratio, decided by comparing the digest
    bytes with the first 8-byte value on the train side (same result, less work a row)."""
    digest = _SPLIT_HASH.copy()  # blake2b(b"rq-split:%d" % step_id): the prefix hashed once
    digest.update(b"%d" % step_id)
    return "test" if digest.digest() < _train_from(test_ratio) else "train"


_SPLIT_HASH = hashlib.blake2b(b"rq-split:", digest_size=8)


@lru_cache(maxsize=64)
def _train_from(test_ratio: float) -> bytes:
    """The smallest n (as 8 big-endian bytes) with n / 2**64 >= test_ratio; b"\xff" * 9 (above
    every digest) when there is none. Binary search: Python's int division rounds correctly
    and is monotonic in n."""
    low, high = 0, 2**64  # the answer is in [low, high]; high means "none"
    while low < high:
        middle = (low + high) // 2
        if middle / 2**64 >= test_ratio:
            high = middle
        else:
            low = middle + 1
    return low.to_bytes(8, "big") if low < 2**64 else b"\xff" * 9


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    """OpenAI tool calls with `arguments` as a JSON string (our stored form)."""
    out = []
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        name = function.get("name") or call.get("name") or ""
        arguments = function.get("arguments", call.get("arguments", {}))
        if not isinstance(arguments, str):
            arguments = dumps(arguments if arguments is not None else {})
        out.append(
            {
                "id": str(call.get("id") or f"call_{index + 1}"),
                "type": "function",
                "function": {"name": str(name), "arguments": arguments},
            }
        )
    return out


_PLAIN_ROLES = ("system", "user", "assistant")  # a tuple: a role may be any JSON, a list included
_ASSISTANT_KEYS = ("role", "content", "tool_calls")
_TOOL_KEYS = ("role", "content", "tool_call_id")
_CALL_KEYS = ("id", "type", "function")
_FUNCTION_KEYS = ("name", "arguments")


def _canonical_calls(calls: Any) -> bool:
    """Whether tool calls are already exactly what `_tool_calls` would make of them."""
    if type(calls) is not list or not calls:
        return False
    for call in calls:
        if type(call) is not dict or tuple(call) != _CALL_KEYS or call["type"] != "function":
            return False
        function, call_id = call["function"], call["id"]
        if type(call_id) is not str or not call_id or type(function) is not dict:
            return False
        if tuple(function) != _FUNCTION_KEYS or type(function["name"]) is not str:
            return False
        if type(function["arguments"]) is not str:
            return False
    return True


def normalize_message(message: Any) -> dict[str, Any]:
    if type(message) is dict:
        # Already in our form (the common cases: plain text, a tool result, canonical tool
        # calls): keep the very dict, as the general path below would rebuild it equal.
        size = len(message)
        if size == 2:
            if type(message.get("content")) is str and message.get("role") in _PLAIN_ROLES:
                return message
        elif size == 3:
            keys = tuple(message)
            if keys == _TOOL_KEYS:
                if message["role"] == "tool" and type(message["tool_call_id"]) is str:
                    return message
            elif keys == _ASSISTANT_KEYS and message["role"] == "assistant" and _canonical_calls(message["tool_calls"]):
                return message
    elif not isinstance(message, dict):
        return {"role": "user", "content": message if isinstance(message, str) else dumps(message)}
    role = message.get("role")
    if type(role) is not str or not role:  # agents' output is untrusted: a role is a string here
        role = "user"
    out: dict[str, Any] = {"role": role, "content": message.get("content")}
    if role == "assistant" and message.get("tool_calls"):
        out["tool_calls"] = _tool_calls(message["tool_calls"])
    if role == "tool":
        out["tool_call_id"] = str(message.get("tool_call_id") or "")
        if message.get("name"):
            out["name"] = message["name"]
    elif message.get("name"):
        out["name"] = message["name"]
    return out


def normalize_input(value: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """A step input (a message list, {"messages", "tools"}, a string or any JSON) as messages + tools."""
    tools = None
    if isinstance(value, dict) and "messages" in value:
        tools = value.get("tools") if isinstance(value.get("tools"), list) and value.get("tools") else None
        value = value.get("messages")
    if value is None:
        return [], tools
    if isinstance(value, str):
        return [{"role": "user", "content": value}], tools
    if isinstance(value, list):
        messages = []
        for message in value:  # plain messages inline: this runs for every message exported
            plain = type(message) is dict and len(message) == 2 and type(message.get("content")) is str
            if plain and message.get("role") in _PLAIN_ROLES:
                messages.append(message)
                continue
            messages.append(normalize_message(message))
        return messages, tools
    return [{"role": "user", "content": dumps(value)}], tools


def normalize_output(value: Any) -> dict[str, Any] | None:
    """A step output (an assistant message, a string, or any JSON) as one assistant message.
    A tool result keeps role "tool": it is context, never a target."""
    if value is None:
        return None
    plain = type(value) is dict and len(value) == 2 and value.get("role") == "assistant"
    if plain and type(value.get("content")) is str:  # the common case: already our form
        return value
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if isinstance(value, dict) and (value.get("role") in ("assistant", "tool") or "tool_calls" in value):
        message = normalize_message({**value, "role": value.get("role") or "assistant"})
        if message["role"] == "assistant" and not isinstance(message.get("content"), str | type(None) | list):
            message["content"] = dumps(message["content"])
        return message
    if isinstance(value, dict) and set(value) == {"content"} and isinstance(value["content"], str):
        return {"role": "assistant", "content": value["content"]}
    return {"role": "assistant", "content": dumps(value)}


def message_text(message: dict[str, Any] | None) -> str:
    """The text of an assistant message: its content, or its tool calls written out."""
    if not message:
        return ""
    content = message.get("content")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if message.get("tool_calls"):
        calls = [f"{c['function']['name']}({c['function']['arguments']})" for c in message["tool_calls"]]
        return (content + "\n" if content else "") + "\n".join(calls)
    return content or ""


def is_tool_result(message: dict[str, Any] | None) -> bool:
    return bool(message) and message.get("role") == "tool"
