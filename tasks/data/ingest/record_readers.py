"""Inputs that hold many records: JSONL files and Hugging Face ``datasets``, one document per line/row.

A record is either a text record (a string in the text field, ``ingest.text_field``, default ``text``) or,
when it has no text field, an instruction record: string ``instruction`` and ``output`` fields and an
optional string ``input``, which becomes a document in the instruction layout (``tasks.data.instructions``:
``### Instruction:`` / ``### Input:`` / ``### Response:``) with mime type ``instructions.MIME_TYPE``; its
other fields (``kind``, ``id`` ...) are its metadata.

A broken line, a record with neither a text field nor ``instruction`` and ``output`` ("missing text
field"), a non-string text, instruction, input or output ("non-string text field") becomes a quarantine row
naming the line or row; so does an instruction record with an empty instruction or output, or one whose
fields hold a layout header line and so would not parse back. A dataset that cannot be loaded, or has
neither a text column nor instruction and output columns, is quarantined whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.data import instructions
from tasks.data.ingest.quarantine import Quarantined, quarantine_row
from tasks.core.records import make_document

if TYPE_CHECKING:
    from tasks.data.ingest.settings import IngestSettings

DATASET_FILES = {".parquet": "parquet", ".json": "json"}
INSTRUCTION_FIELDS = ("instruction", "input", "output")
_NOT_METADATA = {"doc_id", "source"}


def _needs(field: str) -> str:
    return f"a record needs '{field}' (ingest.text_field), or 'instruction' and 'output'"


def _instruction_record(row: dict[str, Any], field: str) -> tuple[str, dict[str, Any]]:
    """(text in the instruction layout, metadata) of a record without a text field; raises ``Quarantined``
    ("missing text field" / "non-string text field") when it is not a usable instruction record."""
    missing = [f for f in ("instruction", "output") if row.get(f) is None]
    if missing:
        raise Quarantined("missing text field", f"no '{field}' and "
                          + " and ".join(f"no '{f}'" for f in missing) + f": {_needs(field)}")
    for f in INSTRUCTION_FIELDS:
        value = row.get(f)
        if value is not None and not isinstance(value, str):
            raise Quarantined("non-string text field", f"'{f}' is {type(value).__name__} (an instruction record's "
                                                       "'instruction', 'input' and 'output' are strings)")
    fields = {f: (row.get(f) or "") for f in INSTRUCTION_FIELDS}
    for f in ("instruction", "output"):
        if not fields[f].strip():
            raise Quarantined("missing text field", f"the instruction record's '{f}' is empty")
    text = instructions.to_text(fields["instruction"], fields["output"], fields["input"])
    parsed = instructions.parse(text)
    if parsed is None or tuple(parsed) != tuple(fields[f].strip() for f in INSTRUCTION_FIELDS):
        raise Quarantined("unreadable", "the instruction record's fields hold a layout header line "
                                        f"({instructions.INSTRUCTION!r}, {instructions.INPUT!r} or "
                                        f"{instructions.RESPONSE!r}), so its text would not parse back")
    meta = {k: v for k, v in row.items() if k not in _NOT_METADATA and k not in INSTRUCTION_FIELDS}
    return text, meta


def _is_instruction_record(row: dict[str, Any]) -> bool:
    return "instruction" in row or "output" in row


def read_jsonl(path: Path, source: str, settings: IngestSettings) -> Iterator[dict[str, Any]]:
    """Documents from a JSONL file; a broken line or a record without text yields a quarantine row."""
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
            if not isinstance(obj, dict):
                yield {"quarantine": quarantine_row(source, "missing text field",
                                                    f"a {type(obj).__name__}, not an object: {_needs(field)}",
                                                    lineno)}
                continue
            if field not in obj:
                if not _is_instruction_record(obj):
                    yield {"quarantine": quarantine_row(source, "missing text field",
                                                        f"no '{field}': {_needs(field)}", lineno)}
                    continue
                try:
                    text, meta = _instruction_record(obj, field)
                except Quarantined as q:
                    yield {"quarantine": quarantine_row(source, q.reason, q.detail, lineno)}
                    continue
                yield make_document(source, lineno, text, instructions.MIME_TYPE, meta)
                continue
            if not isinstance(obj[field], str):
                yield {"quarantine": quarantine_row(source, "non-string text field",
                                                    f"'{field}' is {type(obj[field]).__name__}", lineno)}
                continue
            text = obj.pop(field)
            meta = {k: v for k, v in obj.items() if k not in _NOT_METADATA}
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
    yield from dataset_rows(loaded, source, settings, "application/x-hf-dataset")


def dataset_rows(loaded, source: str, settings: IngestSettings, mime: str) -> Iterator[dict[str, Any]]:
    """Rows of every split: text rows when the text column is there, else instruction rows (instruction and
    output columns, optional input) in the instruction layout."""
    import datasets

    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(getattr(loaded, "split", None)
                                                                                or "train", loaded)]
    field = settings.text_field
    for split, ds in splits:
        split = str(split)
        if field not in ds.column_names:
            if not {"instruction", "output"} <= set(ds.column_names):
                raise Quarantined("missing text field", f"no '{field}' (ingest.text_field) column, nor 'instruction' "
                                                        f"and 'output' columns; columns: {ds.column_names}")
            for i, row in enumerate(ds):
                try:
                    text, meta = _instruction_record(row, field)
                except Quarantined as q:
                    yield {"quarantine": quarantine_row(source, q.reason, q.detail, i)}
                    continue
                yield make_document(source, f"{split}:{i}", text, instructions.MIME_TYPE, {"split": split, **meta})
            continue
        for i, row in enumerate(ds):
            text = row.pop(field)
            if not isinstance(text, str):
                yield {"quarantine": quarantine_row(source, "non-string text field",
                                                    f"'{field}' is {type(text).__name__}", i)}
                continue
            yield make_document(source, f"{split}:{i}", text, mime, {"split": split, **row})
