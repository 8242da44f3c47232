"""Markdown helpers for the reports: numbers, table cells and tables."""

from __future__ import annotations

import re
from typing import Any

CELL_CHARS = 240


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def cell(text: Any, limit: int = CELL_CHARS) -> str:
    """Text fit for one Markdown table cell: | escaped, newlines as <br> (a blank line at most), long text cut."""
    s = re.sub(r"\n\s*\n(\s*\n)+", "\n\n", fmt(text).replace("\r\n", "\n"))
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
