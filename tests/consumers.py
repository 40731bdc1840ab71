"""Where scripts/test.sh installs the export consumers that are not Python packages of this
project's venv: promptfoo (npm) and OpenAI Evals (a venv of its own)."""

from __future__ import annotations

from pathlib import Path

CONSUMERS = Path(__file__).resolve().parents[1] / ".consumers"
PROMPTFOO = CONSUMERS / "node_modules" / ".bin" / "promptfoo"
OAIEVAL = CONSUMERS / "oaievals" / "bin" / "oaieval"
