"""The document record schema and the helpers that build rows of it."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("text", pa.string()),
        ("mime_type", pa.string()),
        ("metadata", pa.string()),  # JSON: title, pages, language, ...
        ("ingested_at", pa.string()),
    ]
)


def doc_id(source: str, position: int | str) -> str:
    """Stable id of the document at ``position`` (element, line or row) in ``source``."""
    return hashlib.sha256(f"{source}\x00{position}".encode()).hexdigest()[:20]


def make_document(source: str, position: int | str, text: str, mime_type: str, metadata: dict[str, Any]) -> dict:
    return {
        "doc_id": doc_id(source, position),
        "source": source,
        "text": text,
        "mime_type": mime_type,
        "metadata": json.dumps(metadata, ensure_ascii=False, default=str, sort_keys=True),
        "ingested_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def to_table(rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> pa.Table:
    """Rows as an Arrow table; columns beyond the document schema are kept (later stages add columns)."""
    if schema is None:
        return pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA) if rows else DOCUMENT_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=schema)
