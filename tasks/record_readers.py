"""Inputs that hold many records: JSONL files and Hugging Face ``datasets``, one document per line/row.

A broken line, a missing text field (``ingest.text_field``) or a non-string text becomes a quarantine
row naming the line or row; a dataset that cannot be loaded is quarantined whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.quarantine import Quarantined, quarantine_row
from tasks.records import make_document

if TYPE_CHECKING:
    from tasks.ingest import IngestSettings

DATASET_FILES = {".parquet": "parquet", ".json": "json"}


def read_jsonl(path: Path, source: str, settings: IngestSettings) -> Iterator[dict[str, Any]]:
    """Documents from a JSONL file; a broken line or a missing text field yields a quarantine row."""
    field = settings.text_field
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield {"quarantine": quarantine_row(source, "broken JSON line", str(exc), lineno)}
                continue
            if not isinstance(obj, dict) or field not in obj:
                yield {"quarantine": quarantine_row(source, "missing text field",
                                                    f"no '{field}' (ingest.text_field)", lineno)}
                continue
            if not isinstance(obj[field], str):
                yield {"quarantine": quarantine_row(source, "non-string text field",
                                                    f"'{field}' is {type(obj[field]).__name__}", lineno)}
                continue
            text = obj.pop(field)
            meta = {k: v for k, v in obj.items() if k not in {"doc_id", "source"}}
            yield make_document(source, lineno, text, "application/jsonl", meta)


def read_dataset(path: Path, source: str, settings: IngestSettings) -> Iterator[dict[str, Any]]:
    """Documents from a local Hugging Face dataset: Parquet/JSON files or a saved-to-disk folder."""
    import datasets

    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(DATASET_FILES[path.suffix.lower()], data_files=str(path), split="train")
    except Exception as exc:
        raise Quarantined("unreadable dataset", f"{type(exc).__name__}: {exc}") from exc
    yield from _dataset_rows(loaded, source, settings, "application/x-hf-dataset")


def _dataset_rows(loaded, source: str, settings: IngestSettings, mime: str) -> Iterator[dict[str, Any]]:
    import datasets

    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(getattr(loaded, "split", None)
                                                                                or "train", loaded)]
    field = settings.text_field
    for split, ds in splits:
        split = str(split)
        if field not in ds.column_names:
            raise Quarantined("missing text field", f"no '{field}' (ingest.text_field); columns: {ds.column_names}")
        for i, row in enumerate(ds):
            text = row.pop(field)
            if not isinstance(text, str):
                yield {"quarantine": quarantine_row(source, "non-string text field",
                                                    f"'{field}' is {type(text).__name__}", i)}
                continue
            yield make_document(source, f"{split}:{i}", text, mime, {"split": split, **row})
