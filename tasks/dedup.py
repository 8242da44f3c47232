"""Dedup: exact (sha256 of normalised text) then near (MinHash LSH over word shingles).

The first document in snapshot order survives; every removed one is recorded with the id it duplicates.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

CODE_VERSION = "dedup-1"
_WORD = re.compile(r"\w+", re.UNICODE)


class DedupSettings(BaseModel):
    """Exact and near-duplicate removal."""

    model_config = ConfigDict(extra="forbid")

    exact: bool = Field(True, description="drop documents whose normalised text is identical")
    near: bool = Field(True, description="drop near duplicates found with MinHash LSH")
    shingle_size: int = Field(5, ge=1, le=32, description="words per shingle")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity that makes a near duplicate")
    seed: int = Field(1, description="MinHash seed")


def exact_key(text: str) -> str:
    """sha256 of the text lower-cased with all whitespace collapsed."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()


def shingles(text: str, size: int) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words).encode()} if words else {b""}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


def minhash(text: str, settings: DedupSettings):
    from datasketch import MinHash

    m = MinHash(num_perm=settings.num_perm, seed=settings.seed)
    m.update_batch(list(shingles(text, settings.shingle_size)))
    return m


def find_duplicates(docs: Iterable[dict[str, Any]], settings: DedupSettings) -> dict[str, dict[str, Any]]:
    """Map from each removed doc_id to ``{"kind": "exact"|"near", "of": kept doc_id, ...}``."""
    from datasketch import MinHashLSH

    removed: dict[str, dict[str, Any]] = {}
    seen_exact: dict[str, str] = {}
    lsh = MinHashLSH(threshold=settings.threshold, num_perm=settings.num_perm) if settings.near else None
    kept_hashes = {}
    for doc in docs:
        doc_id, text = doc["doc_id"], doc["text"]
        if settings.exact:
            key = exact_key(text)
            if key in seen_exact:
                removed[doc_id] = {"kind": "exact", "of": seen_exact[key]}
                continue
            seen_exact[key] = doc_id
        if lsh is None:
            continue
        m = minhash(text, settings)
        best = None
        for cand in lsh.query(m):
            similarity = m.jaccard(kept_hashes[cand])
            if similarity >= settings.threshold and (best is None or similarity > best[1]):
                best = (cand, similarity)
        if best is not None:
            removed[doc_id] = {"kind": "near", "of": best[0], "jaccard": round(best[1], 4)}
            continue
        lsh.insert(doc_id, m)
        kept_hashes[doc_id] = m
    return removed


def dedup_snapshot(ref, settings: DedupSettings, store):
    """The snapshot of ``ref`` without its duplicates; ``removed.jsonl`` beside it says which and why."""
    import json

    from tasks import snapshot

    def produce(stats: dict, extra: dict):
        removed = find_duplicates(
            (row for table in snapshot.iter_tables(ref) for row in table.select(["doc_id", "text"]).to_pylist()),
            settings,
        )
        for table in snapshot.iter_tables(ref):
            keep = [d not in removed for d in table.column("doc_id").to_pylist()]
            yield table.filter(keep)
        kinds = [r["kind"] for r in removed.values()]
        stats.update(exact_duplicates=kinds.count("exact"), near_duplicates=kinds.count("near"),
                     kept=ref.rows - len(removed))
        extra["removed.jsonl"] = "".join(json.dumps({"doc_id": d, **r}) + "\n" for d, r in removed.items())

    return snapshot.materialize(store, "dedup", input_fingerprint=ref.fingerprint, params=settings.model_dump(),
                                code_version=CODE_VERSION, produce=produce)


@task(name="dedup", cache_policy=NO_CACHE)
def dedup_task(ref, settings: DedupSettings, store: str):
    return dedup_snapshot(ref, settings, store)
