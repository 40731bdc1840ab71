"""Reading the "Corrected output" editor back into an output, refusing what cannot be right.

Text answers edit as text; everything else edits as JSON. A corrected tool call is checked
against the tool definitions carried in the step's input (OpenAI-style `tools` whose
`parameters` are JSON Schema), with the `jsonschema` package: the tool must be one of the defined
tools and its arguments must validate; the error names the failing path.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import exceptions as schema_exceptions
from jsonschema import validators

from reviewqueue.web.rendering import is_text_output, tool_definitions


class CorrectionError(ValueError):
    """The editor's text cannot be the corrected output; `message` says why, for the reviewer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parse_correction(text: str, *, original: Any, step_input: Any) -> Any:
    """The corrected output for the editor's `text`, in the same shape as `original`."""
    text = (text or "").replace("\r\n", "\n")
    if is_text_output(original):
        if not text.strip():
            raise CorrectionError("The corrected output is empty.")
        return text if isinstance(original, str) else {**original, "content": text}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CorrectionError(
            f"The corrected output is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."  # type: ignore[attr-defined]
        ) from None
    value = _encode_arguments(value, original)
    check_tool_calls(value, step_input)
    return value


def _encode_arguments(value: Any, original: Any) -> Any:
    """Tool-call arguments were edited as objects; store them as JSON strings when the agent's
    own tool calls carried strings (the OpenAI form), so the correction has the agent's shape."""
    if not (isinstance(value, dict) and isinstance(value.get("tool_calls"), list)):
        return value
    original_calls = original.get("tool_calls") if isinstance(original, dict) else None
    as_strings = any(
        isinstance(call, dict)
        and isinstance(call.get("function"), dict)
        and isinstance(call["function"].get("arguments"), str)
        for call in original_calls or []
    )
    if not as_strings:
        return value
    calls = []
    for call in value["tool_calls"]:
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            arguments = call["function"].get("arguments")
            if not isinstance(arguments, str) and arguments is not None:
                call = {**call, "function": {**call["function"], "arguments": json.dumps(arguments)}}
        calls.append(call)
    return {**value, "tool_calls": calls}


def _path(prefix: str, parts: Any) -> str:
    path = prefix
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def check_tool_calls(value: Any, step_input: Any) -> None:
    """CorrectionError when a tool call in `value` names an undefined tool or breaks its schema."""
    tools = {tool["name"]: tool for tool in tool_definitions(step_input)}
    if not tools or not isinstance(value, dict) or "tool_calls" not in value:
        return
    calls = value["tool_calls"]
    if not isinstance(calls, list):
        raise CorrectionError("tool_calls must be a list of tool calls.")
    for index, call in enumerate(calls):
        where = f"tool_calls[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise CorrectionError(f'{where}: expected {{"type": "function", "function": {{"name", "arguments"}}}}.')
        name = function.get("name")
        if name not in tools:
            raise CorrectionError(
                f"{where}.function.name: '{name}' is not one of the defined tools ({', '.join(sorted(tools))})."
            )
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise CorrectionError(f"{where}.function.arguments: not valid JSON ({exc}).") from None
        schema = tools[name]["parameters"]
        if schema is None:
            continue
        try:
            validator_class = validators.validator_for(schema)
            validator_class.check_schema(schema)
        except schema_exceptions.SchemaError:
            continue  # the agent's own schema is broken: nothing to check against
        error = schema_exceptions.best_match(validator_class(schema).iter_errors(arguments))
        if error is not None:
            path = _path(f"{where}.function.arguments", error.absolute_path)
            raise CorrectionError(f"{path}: {error.message} (tool '{name}').")
