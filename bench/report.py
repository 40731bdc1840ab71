"""The results table and bench/results/latest.json."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    key: str  # e.g. "1a"
    title: str
    value: float
    unit: str
    baseline_label: str
    baseline_value: float
    target: str  # human-readable, e.g. "< 5 ms"
    passed: bool | None  # None: informational, no target
    detail: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if not self.baseline_value or math.isnan(self.baseline_value) or math.isnan(self.value):
            return math.nan
        return self.value / self.baseline_value


def _fmt(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit in ("steps/s", "rows/s"):
        return f"{value:,.0f} {unit}"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.2f} {unit}"


def render_table(figures: list[Figure]) -> str:
    header = ("#", "figure", "value", "baseline (same run)", "ratio", "target", "result")
    rows = [header]
    for fig in figures:
        baseline = f"{fig.baseline_label}: {_fmt(fig.baseline_value, fig.unit)}" if fig.baseline_label else ""
        ratio = "" if math.isnan(fig.ratio) else f"{fig.ratio:.2f}"
        result = {True: "PASS", False: "FAIL", None: "-"}[fig.passed]
        rows.append((fig.key, fig.title, _fmt(fig.value, fig.unit), baseline, ratio, fig.target, result))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _clean(value: object) -> object:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_json(figures: list[Figure], *, settings: dict, path: Path | None = None) -> Path:
    path = path or RESULTS_DIR / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "settings": settings,
        "figures": [{**asdict(fig), "ratio": fig.ratio} for fig in figures],
    }
    path.write_text(json.dumps(_clean(document), indent=2) + "\n")
    return path
