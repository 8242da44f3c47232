"""Ingest: every file under the data paths becomes documents, or a quarantine row saying why not.

Formats: txt, md, html, eml, docx and pdf through ``unstructured`` (offline, ``fast`` PDF strategy),
JSONL with a text field, and local Hugging Face ``datasets`` (Parquet / JSON files, saved-to-disk folders).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks.records import make_document

UNSTRUCTURED_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".eml": "message/rfc822",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pdf": "application/pdf",
}
TEXT_LIKE = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".eml", ".jsonl"}
DATASET_FILES = {".parquet": "parquet", ".json": "json"}
CODE_VERSION = "ingest-1"


class IngestSettings(BaseModel):
    """How raw files become documents."""

    model_config = ConfigDict(extra="forbid")

    pdf_strategy: Literal["fast", "auto", "hi_res", "ocr_only"] = Field(
        "fast", description="unstructured's PDF strategy; only 'fast' works without hub weights"
    )
    text_field: str = Field("text", min_length=1, description="field holding the text in JSONL/datasets")
    max_file_mb: float = Field(64.0, gt=0, description="larger files are quarantined")
    shard_size: int = Field(2000, ge=1, description="documents per Parquet shard")
    follow_symlinks: bool = Field(False, description="read symlinks that point outside the data root")


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


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file())


def discover(paths: list[str | Path], settings: IngestSettings) -> Iterator[tuple[Path, str, Path]]:
    """(file or dataset folder, source name, data root) for everything under ``paths``, sorted."""
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise FileNotFoundError(f"data path does not exist: {root}")
        if root.is_file() or _is_saved_dataset(root):
            yield root, root.name, root
            continue
        real_root = root.resolve()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            here = Path(dirpath)
            dirnames.sort()
            for d in list(dirnames):
                if _is_saved_dataset(here / d):
                    dirnames.remove(d)
                    yield here / d, _source_name(root, here / d), root
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                yield here / name, _source_name(root, here / name), real_root


def _source_name(root: Path, path: Path) -> str:
    return str(Path(root.name) / path.relative_to(root))


def fingerprint_inputs(paths: list[str | Path], settings: IngestSettings) -> str:
    """Content hash of every input file (name, size, bytes): the ingest stage's input fingerprint."""
    h = hashlib.sha256()
    for path, source, _root in discover(paths, settings):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(f"{source}\x00{f.name}\x00".encode())
            try:
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            except OSError as exc:  # unreadable files are quarantined later; hash the error
                h.update(repr(exc).encode())
    return h.hexdigest()


def check_file(path: Path, root: Path, settings: IngestSettings) -> None:
    """Raise Quarantined for files that must not reach a parser."""
    if path.is_symlink() and not settings.follow_symlinks:
        target = path.resolve()
        if not target.is_relative_to(root):
            raise Quarantined("symlink outside the data root", str(target))
    if not path.exists():
        raise Quarantined("unreadable", "broken symlink")
    size = path.stat().st_size
    if size == 0:
        raise Quarantined("empty file")
    if size > settings.max_file_mb * 1024 * 1024:
        raise Quarantined("file too large", f"{size} bytes > ingest.max_file_mb={settings.max_file_mb}")
    suffix = path.suffix.lower()
    if suffix in TEXT_LIKE:
        with open(path, "rb") as fh:
            head = fh.read(8192)
        if b"\x00" in head and not (head.startswith((b"\xff\xfe", b"\xfe\xff"))):  # UTF-16 has NULs
            raise Quarantined("binary content in a text file", f"NUL bytes in the first {len(head)} bytes")
    if suffix == ".pdf":
        _check_pdf(path)


def _check_pdf(path: Path) -> None:
    from pdfminer.pdfdocument import PDFDocument, PDFPasswordIncorrect
    from pdfminer.pdfparser import PDFParser, PDFSyntaxError

    try:
        with open(path, "rb") as fh:
            PDFDocument(PDFParser(fh))  # raises on a password or a broken structure
    except PDFPasswordIncorrect as exc:
        raise Quarantined("encrypted PDF", "a password is needed to read it") from exc
    except PDFSyntaxError as exc:
        raise Quarantined("corrupt PDF", str(exc)) from exc
    except Exception as exc:  # pdfminer raises many types on broken files
        raise Quarantined("corrupt PDF", f"{type(exc).__name__}: {exc}") from exc


def partition_file(path: Path, settings: IngestSettings) -> tuple[str, dict[str, Any]]:
    """Text and metadata of one document file through unstructured."""
    suffix = path.suffix.lower()
    if suffix in {".txt", ".text"}:
        from unstructured.partition.text import partition_text as part
    elif suffix in {".md", ".markdown"}:
        from unstructured.partition.md import partition_md as part
    elif suffix in {".html", ".htm"}:
        from unstructured.partition.html import partition_html as part
    elif suffix == ".eml":
        from unstructured.partition.email import partition_email as part
    elif suffix == ".docx":
        from unstructured.partition.docx import partition_docx as part
    elif suffix == ".pdf":
        from unstructured.partition.pdf import partition_pdf

        def part(filename: str):  # noqa: E306
            return partition_pdf(filename=filename, strategy=settings.pdf_strategy, languages=["eng"])
    else:
        raise Quarantined("unsupported type", suffix or "no extension")
    try:
        elements = part(filename=str(path))
    except Quarantined:
        raise
    except Exception as exc:
        raise Quarantined("unreadable", f"{type(exc).__name__}: {exc}") from exc
    texts = [str(e.text).strip() for e in elements if getattr(e, "text", None) and str(e.text).strip()]
    if not texts:
        raise Quarantined("no text extracted", f"{len(elements)} elements, none with text")
    title = next((str(e.text).strip() for e in elements if e.category == "Title" and str(e.text).strip()), None)
    pages = sorted({e.metadata.page_number for e in elements if getattr(e.metadata, "page_number", None)})
    languages = sorted({lang for e in elements for lang in (getattr(e.metadata, "languages", None) or [])})
    metadata: dict[str, Any] = {"filename": path.name, "title": title or path.stem, "elements": len(elements)}
    if pages:
        metadata["pages"] = len(pages)
    if languages:
        metadata["languages"] = languages
    return "\n\n".join(texts), metadata


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
            if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                yield {"quarantine": quarantine_row(source, f"missing text field '{field}'", "", lineno)}
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
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("train", loaded)]
    field = settings.text_field
    for split, ds in splits:
        if field not in ds.column_names:
            raise Quarantined(f"missing text field '{field}'", f"columns: {ds.column_names}")
        for i, row in enumerate(ds):
            text = row.pop(field)
            if not isinstance(text, str):
                yield {"quarantine": quarantine_row(source, f"non-string '{field}'", "", i)}
                continue
            yield make_document(source, f"{split}:{i}", text, "application/x-hf-dataset", {"split": split, **row})


def ingest_path(path: Path, source: str, root: Path, settings: IngestSettings) -> Iterator[dict[str, Any]]:
    """Documents (dicts of the record schema) or ``{"quarantine": row}`` items from one input."""
    try:
        if path.is_dir():
            yield from read_dataset(path, source, settings)
            return
        check_file(path, root, settings)
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from read_jsonl(path, source, settings)
        elif suffix in DATASET_FILES:
            yield from read_dataset(path, source, settings)
        else:
            text, metadata = partition_file(path, settings)
            yield make_document(source, 0, text, UNSTRUCTURED_TYPES[suffix], metadata)
    except Quarantined as q:
        yield {"quarantine": quarantine_row(source, q.reason, q.detail)}
    except OSError as exc:
        yield {"quarantine": quarantine_row(source, "unreadable", f"{type(exc).__name__}: {exc}")}


def _ingest_batch(items: list[tuple[str, str, str]], settings: IngestSettings) -> tuple[list[dict], list[dict]]:
    """(documents, quarantine rows) for a batch of (path, source, root) inputs — one Dask task."""
    docs, bad = [], []
    for path, source, root in items:
        for item in ingest_path(Path(path), source, Path(root), settings):
            (bad.append(item["quarantine"]) if "quarantine" in item else docs.append(item))
    return docs, bad


def ingest_to_snapshot(paths: list[str | Path], settings: IngestSettings, dask_settings, store: Path):
    """Ingest everything under ``paths`` into a documents snapshot (reused when the inputs are unchanged)."""
    from tasks import snapshot
    from tasks.executor import map_shards
    from tasks.records import DOCUMENT_SCHEMA, to_table

    items = [(str(p), s, str(r)) for p, s, r in discover(paths, settings)]
    if not items:
        raise FileNotFoundError(f"no input files under {', '.join(map(str, paths))}")
    batch = max(1, min(64, len(items) // max(1, dask_settings.workers * 4) or 1))
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]

    def produce(stats: dict, extra: dict):
        quarantined: list[dict] = []
        pending: list[dict] = []
        documents = 0
        for docs, bad in map_shards(_ingest_batch, batches, dask_settings, settings):
            quarantined.extend(bad)
            pending.extend(docs)
            documents += len(docs)
            while len(pending) >= settings.shard_size:
                yield to_table(pending[: settings.shard_size])
                pending = pending[settings.shard_size :]
        if pending:
            yield to_table(pending)
        reasons: dict[str, int] = {}
        for q in quarantined:
            reasons[q["reason"]] = reasons.get(q["reason"], 0) + 1
        stats.update(inputs=len(items), documents=documents, quarantined=len(quarantined),
                     quarantined_by_reason=reasons)
        extra["quarantine.jsonl"] = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in quarantined)

    return snapshot.materialize(
        store, "ingest", input_fingerprint=fingerprint_inputs(paths, settings),
        params={"paths": [str(p) for p in paths], **settings.model_dump()}, code_version=CODE_VERSION,
        produce=produce, schema=DOCUMENT_SCHEMA,
    )


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(paths: list[str], settings: IngestSettings, dask_settings, store: str):
    return ingest_to_snapshot(paths, settings, dask_settings, Path(store))
