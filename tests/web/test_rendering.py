"""Untrusted agent data rendered safely; messages, editor text and diffs."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from reviewqueue.web import rendering
from reviewqueue.web.computer_use import screen_action

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click me](javascript:alert(1))",
    '<a href="javascript:alert(1)">x</a>',
    '<svg onload="alert(1)"><circle r="4"/></svg>',
    "![pic](javascript:alert(1))",
    '<iframe src="https://evil.example"></iframe>',
]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def active_content(html: str) -> list[str]:
    """Tags that could run code or load something, and attributes that could: what must never appear."""
    parser = _Tags()
    parser.feed(html)
    found = []
    for tag, attrs in parser.tags:
        if tag in ("script", "svg", "img", "iframe", "object", "embed", "style", "image"):
            found.append(tag)
        for name, value in attrs.items():
            if name.startswith("on") or name in ("src", "style", "srcdoc"):
                found.append(f"{tag}[{name}]")
            if name == "href" and not (value or "").startswith(("http://", "https://", "mailto:")):
                found.append(f"{tag}[href={value}]")
    return found


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_never_lets_code_through(text):
    assert active_content(str(rendering.markdown_html(text))) == []


def test_markdown_keeps_formatting_and_safe_links():
    html = str(rendering.markdown_html("**bold** and [docs](https://example.com)\n\n```\ncode <b>\n```"))
    assert "<strong>bold</strong>" in html
    assert 'href="https://example.com"' in html and 'rel="noopener noreferrer nofollow"' in html
    assert "<pre><code>code &lt;b&gt;\n</code></pre>" in html


def test_conversation_shapes():
    messages = rendering.conversation(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {}}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "function": {"name": "lookup", "arguments": '{"id": "A1"}'}}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'},
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        }
    )
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool"]
    assert "Hi" in messages[1].html and messages[1].notes
    assert messages[2].tool_calls[0].name == "lookup"
    assert messages[2].tool_calls[0].arguments == '{\n  "id": "A1"\n}'
    assert messages[3].code == '{\n  "ok": true\n}'
    assert rendering.conversation("plain prompt")[0].role == "user"
    assert rendering.conversation({"odd": 1})[0].code == '{\n  "odd": 1\n}'


def test_editor_modes():
    assert rendering.editable_output("text") == ("text", "text")
    assert rendering.editable_output({"role": "assistant", "content": "hello"}) == ("text", "hello")
    mode, text = rendering.editable_output(
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]}
    )
    assert mode == "json" and '"arguments": {\n' in text  # arguments edit as an object, not a string
    assert rendering.editable_output({"action": "click", "x": 1, "y": 2})[0] == "json"


def test_diff_marks_changed_lines():
    lines = rendering.output_diff(
        {"role": "assistant", "content": "a\nb\nc"}, {"role": "assistant", "content": "a\nB\nc"}
    )
    assert [(line.kind, line.text) for line in lines] == [("same", "a"), ("del", "b"), ("add", "B"), ("same", "c")]


@pytest.mark.parametrize(
    ("output", "point", "box"),
    [
        ({"action": "click", "x": 412, "y": 230}, (412, 230), None),
        ({"action": "left_click", "coordinate": [10, 20]}, (10, 20), None),
        ({"action": "click", "bbox": [10, 20, 30, 60]}, (20, 40), (10, 20, 20, 40)),
        ({"action": "click", "bbox": {"x": 10, "y": 20, "width": 20, "height": 40}}, (20, 40), (10, 20, 20, 40)),
        (
            {"role": "assistant", "tool_calls": [{"function": {"name": "click", "arguments": '{"x": 5, "y": 6}'}}]},
            (5, 6),
            None,
        ),
    ],
)
def test_screen_action(output, point, box):
    action = screen_action(output)
    assert (action.x, action.y) == point
    assert action.box == box


def test_no_screen_action_without_coordinates():
    assert screen_action({"role": "assistant", "content": "hi"}) is None
    assert screen_action("click at 3,4") is None
    assert screen_action({"action": "click", "x": True, "y": 2}) is None
