"""Clean: normalise whitespace and drop documents too short to teach anything.

Instruction records (mime type ``instructions.MIME_TYPE``) are normalised and length-checked like any
document (the layout survives: line breaks and one blank line are kept), but the prose heuristics of
``tasks.data.quality`` (Gopher/C4 word counts, word lengths, repeated lines and n-grams, symbol and non-alphabetic
ratios) do not apply to them: a forty-word record with a one-line formulaic response is not low-quality web
text. The blocklist and the injection patterns still do, on the record's fields (not on its ``###`` headers,
which would read as a role tag). The stats count the instruction records kept (``instructions``).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks.data import instructions
from tasks.data.quality.filtering import filter_documents
from tasks.data.quality.settings import CODE_VERSION as QUALITY_CODE_VERSION, QualitySettings, cache_params

CODE_VERSION = "clean-4"
# the Gopher/C4 heuristics written for prose, switched off for instruction records
PROSE_FILTERS = ("word_count", "mean_word_length", "repeated_lines", "top_ngrams", "duplicate_ngrams",
                 "symbol_ratio", "non_alpha_words")
_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than newlines
_BLANK_LINES = re.compile(r"\n\s*\n+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class CleanSettings(BaseModel):
    """Normalisation and the simplest quality filters."""

    model_config = ConfigDict(extra="forbid")

    min_chars: int = Field(50, ge=0, description="documents shorter than this (after cleaning) are dropped")
    max_chars: int = Field(1_000_000, gt=0, description="documents longer than this are dropped")
    quality: QualitySettings = Field(default_factory=QualitySettings, description="Gopher/C4-style quality filters")


def normalise_text(text: str) -> str:
    """NFC, no control characters, single spaces, at most one blank line between paragraphs, stripped.

    Control characters go before NFC: one between a letter and a combining mark ("e\\x07\\u0301") blocks
    composition, so removing it after NFC left a text that a second normalisation changed.
    """
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = unicodedata.normalize("NFC", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def clean_documents(docs: Iterable[dict[str, Any]], settings: CleanSettings, counts: Counter) -> Iterator[dict]:
    """Cleaned documents; ``counts`` gets ``empty``, ``too_short`` and ``too_long`` for the ones dropped."""
    for doc in docs:
        text = normalise_text(doc.get("text") or "")
        if not text:
            counts["empty"] += 1
        elif len(text) < settings.min_chars:
            counts["too_short"] += 1
        elif len(text) > settings.max_chars:
            counts["too_long"] += 1
        else:
            counts["kept"] += 1
            yield {**doc, "text": text}


def instruction_quality(settings: QualitySettings) -> QualitySettings:
    """The quality settings applied to instruction records: ``settings`` with the prose heuristics off."""
    return settings.model_copy(update={name: getattr(settings, name).model_copy(update={"enabled": False})
                                       for name in PROSE_FILTERS})


def quality_filter(docs: Iterable[dict[str, Any]], settings: QualitySettings, counts: Counter) -> Iterator[dict]:
    """``filtering.filter_documents`` in input order, with ``instruction_quality`` for instruction records, checked
    on their fields without the layout headers; ``counts["instructions"]`` gets the instruction records kept."""
    for_records = instruction_quality(settings)
    for doc in docs:
        if doc.get("mime_type") != instructions.MIME_TYPE:
            yield from filter_documents([doc], settings, counts)
            continue
        record = instructions.parse(doc.get("text") or "")
        fields = "\n\n".join(part for part in record if part) if record is not None else doc.get("text") or ""
        for kept in filter_documents([{**doc, "text": fields}], for_records, counts):
            counts["instructions"] += 1
            yield {**kept, "text": doc["text"]}


def _clean_shard(table, settings: CleanSettings):
    """One shard cleaned and quality-filtered; documents kept get a ``quality_flags`` column."""
    import pyarrow as pa

    from tasks.core.records import to_table

    counts: Counter = Counter()
    qcounts: Counter = Counter()
    rows = list(quality_filter(clean_documents(table.to_pylist(), settings, counts), settings.quality, qcounts))
    counts["kept"] -= sum(v for k, v in qcounts.items() if k.startswith("dropped_"))
    counts.update(qcounts)
    schema = table.schema
    if "quality_flags" not in schema.names:
        schema = schema.append(pa.field("quality_flags", pa.string()))
    return to_table(rows, schema), counts


def clean_snapshot(ref, settings: CleanSettings, dask_settings, store):
    """The cleaned snapshot of ``ref``, one Dask task per shard."""
    from tasks.core.executor import shardwise_snapshot

    def summarize(total: Counter) -> dict:
        filters = {k: v for k, v in sorted(total.items()) if k.startswith(("dropped_", "flagged_"))}
        return dict(kept=total["kept"], dropped_empty=total["empty"], dropped_too_short=total["too_short"],
                    dropped_too_long=total["too_long"], instructions=total["instructions"], **filters)

    return shardwise_snapshot(
        ref, "clean", _clean_shard, settings, dask_settings, store,
        params={**settings.model_dump(mode="json"), "quality": cache_params(settings.quality)},
        code_version=f"{CODE_VERSION}+{QUALITY_CODE_VERSION}", summarize=summarize,
    )


@task(name="clean", cache_policy=NO_CACHE)
def clean_task(ref, settings: CleanSettings, dask_settings, store: str):
    return clean_snapshot(ref, settings, dask_settings, store)
