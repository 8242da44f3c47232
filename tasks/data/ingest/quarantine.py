"""Quarantine: why an input (a file, a line, a row) was not ingested, as an exception and as a row.

Quarantine reasons are the fixed strings in ``QUARANTINE_REASONS``; the detail says more (the file's
missing dependency, the parser's error, the setting at fault).
"""

from __future__ import annotations

from typing import Any

QUARANTINE_REASONS = frozenset({
    "empty file",
    "file too large",
    "unsupported type",              # unknown suffix, or a format whose dependency is not installed
    "symlink outside the data root",
    "symlinked folder",
    "binary content in a text file",
    "encrypted PDF",
    "copy-protected PDF",            # only with ingest.pdf_copy_protected = "quarantine"
    "corrupt PDF",
    "encrypted email",
    "unreadable",                    # the parser failed, or the file is not what its suffix says
    "no text extracted",
    "broken JSON line",
    "missing text field",
    "non-string text field",
    "unreadable dataset",
})


class Quarantined(Exception):
    """A file (or line) that cannot be ingested, with the reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def quarantine_row(source: str, reason: str, detail: str = "", position: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"source": source, "reason": reason, "detail": detail[:500]}
    if position is not None:
        row["position"] = position
    return row
