"""Turning untrusted agent data into safe, readable HTML pieces for the reviewer's screens.

Everything an agent sends is untrusted. Markdown is rendered by markdown-it-py with raw HTML
turned off, then sanitised by nh3 with a short allow-list (no images, no attributes that run
code, links only to http/https/mailto). Everything else reaches the templates as plain strings
and is escaped by Django's autoescaping.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "a", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}


def markdown_html(text: str) -> SafeString:
    """Markdown to sanitised HTML (safe to put in a template as is)."""
    raw = _markdown.render(text or "")
    return mark_safe(  # nh3 has just sanitised it
        nh3.clean(
            raw,
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            url_schemes=URL_SCHEMES,
            link_rel="noopener noreferrer nofollow",
            strip_comments=True,
        )
    )


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _maybe_json(text: Any) -> Any:
    """A JSON string decoded, or None when it is not JSON (tool arguments and results are strings)."""
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        return None


# --- messages -----------------------------------------------------------------------------------


@dataclass
class ToolCall:
    name: str
    call_id: str
    arguments: str  # pretty-printed JSON (or the raw string when it is not JSON)


@dataclass
class Message:
    role: str
    html: SafeString | None = None  # rendered markdown content
    code: str | None = None  # content shown verbatim as a JSON/code block (tool results)
    tool_calls: list[ToolCall] = field(default_factory=list)
    name: str = ""
    tool_call_id: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. "an image part (not displayed)"


def _tool_calls(raw: Any) -> list[ToolCall]:
    calls = []
    for call in raw if isinstance(raw, list) else []:
        if not isinstance(call, dict):
            calls.append(ToolCall(name="?", call_id="", arguments=pretty_json(call)))
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else call
        arguments = function.get("arguments", function.get("input", {}))
        decoded = _maybe_json(arguments)
        if decoded is not None:
            shown = pretty_json(decoded)
        elif isinstance(arguments, str):
            shown = arguments
        else:
            shown = pretty_json(arguments)
        calls.append(ToolCall(name=str(function.get("name", "?")), call_id=str(call.get("id", "")), arguments=shown))
    return calls


def message(raw: Any) -> Message:
    """One OpenAI-style message (anything else is shown as JSON under role "data")."""
    if not isinstance(raw, dict):
        if isinstance(raw, str):
            return Message(role="text", html=markdown_html(raw))
        return Message(role="data", code=pretty_json(raw))
    role = str(raw.get("role") or "message")
    msg = Message(role=role, name=str(raw.get("name") or ""), tool_call_id=str(raw.get("tool_call_id") or ""))
    content = raw.get("content")
    if isinstance(content, str):
        decoded = _maybe_json(content) if role == "tool" else None
        if decoded is not None:
            msg.code = pretty_json(decoded)
        elif role == "tool":
            msg.code = content
        else:
            msg.html = markdown_html(content)
    elif isinstance(content, list):  # content parts
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
                texts.append(str(part.get("text") or part.get("content") or ""))
            elif isinstance(part, dict) and "image" in str(part.get("type", "")):
                msg.notes.append("An image part (not displayed here; attached images are shown below).")
            else:
                msg.notes.append(f"A {part.get('type', 'data') if isinstance(part, dict) else 'data'} part.")
        msg.html = markdown_html("\n\n".join(texts)) if texts else None
    elif content is not None:
        msg.code = pretty_json(content)
    msg.tool_calls = _tool_calls(raw.get("tool_calls"))
    extra = {k: v for k, v in raw.items() if k not in ("role", "content", "name", "tool_calls", "tool_call_id")}
    if extra and not msg.html and not msg.code and not msg.tool_calls:
        msg.code = pretty_json(extra)
    return msg


def conversation(step_input: Any) -> list[Message]:
    """The input as chat messages: a list of messages, {"messages": [...]}, a prompt string, or JSON."""
    if isinstance(step_input, dict) and isinstance(step_input.get("messages"), list):
        return [message(m) for m in step_input["messages"]]
    if isinstance(step_input, list):
        return [message(m) for m in step_input]
    if step_input is None:
        return []
    if isinstance(step_input, str):
        return [Message(role="user", html=markdown_html(step_input))]
    return [Message(role="data", code=pretty_json(step_input))]


def tool_definitions(step_input: Any) -> list[dict[str, Any]]:
    """OpenAI-style tool definitions carried in the input (`{"tools": [...]}`), normalised to
    `{"name", "description", "parameters"}`."""
    tools = step_input.get("tools") if isinstance(step_input, dict) else None
    found = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = function.get("name")
        if isinstance(name, str) and name:
            parameters = function.get("parameters", function.get("input_schema"))
            found.append(
                {
                    "name": name,
                    "description": str(function.get("description") or ""),
                    "parameters": parameters if isinstance(parameters, dict) else None,
                }
            )
    return found


# --- the output and its editor ------------------------------------------------------------------


def is_text_output(output: Any) -> bool:
    """A text answer: a string, or an assistant message whose content is text and has no tool calls."""
    if isinstance(output, str):
        return True
    return (
        isinstance(output, dict)
        and isinstance(output.get("content"), str)
        and not output.get("tool_calls")
        and set(output) <= {"role", "content", "name", "refusal"}
    )


def output_message(output: Any) -> Message:
    if isinstance(output, dict) and ("role" in output or "tool_calls" in output):
        return message({"role": "assistant", **output})
    if isinstance(output, str):
        return Message(role="assistant", html=markdown_html(output))
    return Message(role="json", code=pretty_json(output))


def editable_output(output: Any) -> tuple[str, str]:
    """(mode, text) for the "Corrected output" editor: ("text", the answer) for text answers,
    ("json", pretty JSON) otherwise, with tool-call arguments decoded from their JSON strings so
    they edit as JSON objects (they are encoded back by `corrections.parse_correction`)."""
    if isinstance(output, str):
        return "text", output
    if is_text_output(output):
        return "text", output["content"]
    return "json", pretty_json(decode_arguments(output))


def decode_arguments(output: Any) -> Any:
    """A copy of `output` with each tool call's JSON-string arguments decoded."""
    if not isinstance(output, dict) or not isinstance(output.get("tool_calls"), list):
        return output
    calls = []
    for call in output["tool_calls"]:
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            decoded = _maybe_json(call["function"].get("arguments"))
            if decoded is not None:
                call = {**call, "function": {**call["function"], "arguments": decoded}}
        calls.append(call)
    return {**output, "tool_calls": calls}


# --- diff ---------------------------------------------------------------------------------------


@dataclass
class DiffLine:
    kind: str  # "add" | "del" | "same" | "gap"
    text: str


def diff_lines(original: str, corrected: str, *, context: int = 3) -> list[DiffLine]:
    """A line diff of the correction against the original, with a little context."""
    lines: list[DiffLine] = []
    a, b = original.splitlines(), corrected.splitlines()
    for group in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_grouped_opcodes(context):
        if lines:
            lines.append(DiffLine("gap", "…"))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines.extend(DiffLine("same", line) for line in a[i1:i2])
                continue
            if tag in ("replace", "delete"):
                lines.extend(DiffLine("del", line) for line in a[i1:i2])
            if tag in ("replace", "insert"):
                lines.extend(DiffLine("add", line) for line in b[j1:j2])
    return lines


def output_diff(original: Any, corrected: Any) -> list[DiffLine]:
    """The diff between two outputs, in the editor's own form (text, or JSON with decoded arguments)."""
    mode, before = editable_output(original)
    if mode == "text" and is_text_output(corrected):
        after = editable_output(corrected)[1]
    else:
        before = pretty_json(decode_arguments(original))
        after = pretty_json(decode_arguments(corrected))
    return diff_lines(before, after)
