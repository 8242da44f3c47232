"""Clean: normalise whitespace and drop documents too short to teach anything."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks import quality
from tasks.quality import QualitySettings, filter_documents

CODE_VERSION = "clean-3"
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


def _clean_shard(shard: str, settings: CleanSettings):
    """One shard cleaned and quality-filtered; documents kept get a ``quality_flags`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.records import to_table

    table = pq.read_table(shard)
    counts: Counter = Counter()
    qcounts: Counter = Counter()
    rows = list(filter_documents(clean_documents(table.to_pylist(), settings, counts), settings.quality, qcounts))
    counts["kept"] -= sum(v for k, v in qcounts.items() if k.startswith("dropped_"))
    counts.update(qcounts)
    schema = table.schema
    if "quality_flags" not in schema.names:
        schema = schema.append(pa.field("quality_flags", pa.string()))
    return to_table(rows, schema), counts


def clean_snapshot(ref, settings: CleanSettings, dask_settings, store):
    """The cleaned snapshot of ``ref``, one Dask task per shard."""
    from tasks.executor import shardwise_snapshot

    def summarize(total: Counter) -> dict:
        filters = {k: v for k, v in sorted(total.items()) if k.startswith(("dropped_", "flagged_"))}
        return dict(kept=total["kept"], dropped_empty=total["empty"], dropped_too_short=total["too_short"],
                    dropped_too_long=total["too_long"], **filters)

    return shardwise_snapshot(
        ref, "clean", _clean_shard, settings, dask_settings, store,
        params={**settings.model_dump(mode="json"), "quality": quality.cache_params(settings.quality)},
        code_version=f"{CODE_VERSION}+{quality.CODE_VERSION}", summarize=summarize,
    )


@task(name="clean", cache_policy=NO_CACHE)
def clean_task(ref, settings: CleanSettings, dask_settings, store: str):
    return clean_snapshot(ref, settings, dask_settings, store)
