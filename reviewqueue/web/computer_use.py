"""Where a computer-use step wants to act: a point or a box on its screenshot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScreenAction:
    action: str  # "click", "double_click", "type", ... (as the agent named it)
    x: float | None = None  # a point
    y: float | None = None
    box: tuple[float, float, float, float] | None = None  # x, y, width, height

    @property
    def has_point(self) -> bool:
        return self.x is not None and self.y is not None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _from_mapping(data: dict[str, Any], action: str) -> ScreenAction | None:
    x, y = _number(data.get("x")), _number(data.get("y"))
    if x is not None and y is not None:
        width, height = _number(data.get("width")), _number(data.get("height"))
        if width is not None and height is not None:
            return ScreenAction(action, x + width / 2, y + height / 2, (x, y, width, height))
        return ScreenAction(action, x, y)
    coordinate = data.get("coordinate") or data.get("coordinates") or data.get("point")
    if isinstance(coordinate, list | tuple) and len(coordinate) == 2:
        cx, cy = _number(coordinate[0]), _number(coordinate[1])
        if cx is not None and cy is not None:
            return ScreenAction(action, cx, cy)
    box = data.get("bbox") or data.get("bounding_box") or data.get("box")
    if isinstance(box, dict):  # {x, y, width, height}
        numbers = [_number(box.get(key)) for key in ("x", "y", "width", "height")]
        if all(n is not None for n in numbers):
            bx, by, bw, bh = numbers  # type: ignore[misc]
            return ScreenAction(action, bx + bw / 2, by + bh / 2, (bx, by, bw, bh))
    if isinstance(box, list | tuple) and len(box) == 4:  # [x1, y1, x2, y2]
        numbers = [_number(v) for v in box]
        if all(n is not None for n in numbers):
            x1, y1, x2, y2 = numbers  # type: ignore[misc]
            return ScreenAction(action, (x1 + x2) / 2, (y1 + y2) / 2, (x1, y1, x2 - x1, y2 - y1))
    return None


def screen_action(output: Any) -> ScreenAction | None:
    """The UI action in a step's output: `{"action": "click", "x": 412, "y": 230}`, a
    `coordinate: [x, y]`, a bounding box (`bbox: [x1, y1, x2, y2]` or `{x, y, width, height}`),
    or the same inside a tool call's arguments. None when there is no position."""
    if not isinstance(output, dict):
        return None
    found = _from_mapping(output, str(output.get("action") or output.get("type") or "action"))
    if found:
        return found
    for call in output.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                continue
        if isinstance(arguments, dict):
            found = _from_mapping(arguments, str(arguments.get("action") or function.get("name") or "action"))
            if found:
                return found
    return None
