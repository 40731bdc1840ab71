"""The "Corrected output" editor: text answers as text, the rest as JSON checked against tool schemas."""

from __future__ import annotations

import json

import pytest

from reviewqueue.web.corrections import CorrectionError, parse_correction

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "amount_eur": {"type": "number", "maximum": 500}},
                "required": ["order_id", "amount_eur"],
                "additionalProperties": False,
            },
        },
    }
]
STEP_INPUT = {"messages": [{"role": "user", "content": "refund A1"}], "tools": TOOLS}
ORIGINAL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "issue_refund", "arguments": '{"order_id": "A1", "amount_eur": 10}'},
        }
    ],
}


def edited(arguments, name="issue_refund"):
    return json.dumps(
        {**ORIGINAL, "tool_calls": [{**ORIGINAL["tool_calls"][0], "function": {"name": name, "arguments": arguments}}]}
    )


def test_text_answers_keep_their_shape():
    assert parse_correction("Better.", original="Bad.", step_input=None) == "Better."
    original = {"role": "assistant", "content": "Bad."}
    assert parse_correction("Better.\r\n", original=original, step_input=None) == {
        "role": "assistant",
        "content": "Better.\n",
    }
    with pytest.raises(CorrectionError, match="empty"):
        parse_correction("  ", original="Bad.", step_input=None)


def test_invalid_json_is_refused_with_a_message_that_says_so():
    with pytest.raises(CorrectionError, match="not valid JSON.*line 1"):
        parse_correction('{"tool_calls": [', original=ORIGINAL, step_input=STEP_INPUT)


def test_valid_tool_call_arguments_are_stored_as_the_agent_sent_them():
    value = parse_correction(edited({"order_id": "A1", "amount_eur": 5}), original=ORIGINAL, step_input=STEP_INPUT)
    arguments = value["tool_calls"][0]["function"]["arguments"]
    assert isinstance(arguments, str) and json.loads(arguments) == {"order_id": "A1", "amount_eur": 5}


def test_schema_violation_names_the_failing_path():
    with pytest.raises(CorrectionError) as refused:
        parse_correction(edited({"order_id": "A1", "amount_eur": 900}), original=ORIGINAL, step_input=STEP_INPUT)
    assert "tool_calls[0].function.arguments.amount_eur" in refused.value.message
    assert "500" in refused.value.message
    with pytest.raises(CorrectionError, match="required property"):
        parse_correction(edited({"order_id": "A1"}), original=ORIGINAL, step_input=STEP_INPUT)


def test_tool_name_must_be_defined():
    with pytest.raises(CorrectionError, match="'delete_everything' is not one of the defined tools"):
        parse_correction(
            edited({"order_id": "A1", "amount_eur": 1}, name="delete_everything"),
            original=ORIGINAL,
            step_input=STEP_INPUT,
        )


def test_without_tool_definitions_any_json_goes():
    value = parse_correction('{"action": "click", "x": 1, "y": 2}', original={"action": "click"}, step_input=[])
    assert value == {"action": "click", "x": 1, "y": 2}
