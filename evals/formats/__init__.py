"""The export formats by name (`--format`). One module per family; FORMATS.md has the shapes."""

from __future__ import annotations

from evals.formats import eval_frameworks, openai, tabular, trl
from evals.formats.base import ExportContext, Format

REGISTRY: dict[str, Format] = {
    fmt.name: fmt for module in (openai, trl, eval_frameworks, tabular) for fmt in module.FORMATS
}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def get_format(name: str) -> Format:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose from {', '.join(NAMES)}") from None


__all__ = ["NAMES", "REGISTRY", "ExportContext", "Format", "get_format"]
