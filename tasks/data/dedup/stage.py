"""The dedup stage: exact groups and signatures in one streaming pass, then near clusters; the snapshot
without the duplicates (``removed.jsonl`` beside it says which and why) and its Prefect task."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data.dedup.clusters import near_clusters
from tasks.data.dedup.minhash import Permutations, char_values, minhash_signatures, shingle_hashes, word_hashes
from tasks.data.dedup.settings import DedupSettings
from tasks.data.dedup.sketch import Sketches, bag_sketches

CODE_VERSION = "dedup-3"  # 3: bag-of-words verification, word 3-gram candidates (bench/dedup_study.py)
_BATCH_DOCS = 256  # documents tokenised and signed together, at most ... (small enough to stay in cache)
_BATCH_CHARS = 1 << 18  # ... and about this many characters (a longer document goes alone)


def exact_key(text: str) -> str:
    """sha256 of the text lower-cased with all whitespace collapsed."""
    return _exact_digest(text.lower()).hex()


def _exact_digest(lowered: str) -> bytes:
    """``exact_key`` of an already lower-cased text, as 32 raw bytes (what the exact-group table holds)."""
    return hashlib.sha256(" ".join(lowered.split()).encode()).digest()


@dataclass
class Collected:
    """What one streaming pass keeps: ids, exact groups, and signatures (and bag-of-words sketches) of the
    groups' first documents. ``duplicates_of`` may cluster it under other verification settings (verify,
    threshold, banding) as long as the shingles, permutations, seed and sketch size are those it was made with."""

    doc_ids: list[str] = field(default_factory=list)
    exact_of: dict[int, int] = field(default_factory=dict)  # position -> position of its exact group's first
    reps: list[int] = field(default_factory=list)  # positions of exact-group representatives, in order
    signatures: np.ndarray | None = None  # one row per representative (near only)
    usable: np.ndarray | None = None
    sketches: Sketches | None = None  # verify: words only


def _batches(docs: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """``docs`` in lists of at most ``_BATCH_DOCS`` documents and about ``_BATCH_CHARS`` characters."""
    batch: list[dict[str, Any]] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc["text"] or "")
        if len(batch) >= _BATCH_DOCS or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def collect(docs: Iterable[dict[str, Any]], settings: DedupSettings) -> Collected:
    """One pass over ``docs``: exact groups, and signatures of the groups' first documents (if near)."""
    out = Collected()
    first_of_key: dict[bytes, int] = {}
    perms = Permutations.from_settings(settings.num_perm, settings.seed)
    signatures: list[np.ndarray] = []
    usable: list[np.ndarray] = []
    sketches: list[Sketches] = []
    for batch in _batches(docs):
        texts = []
        for doc in batch:
            pos, text = len(out.doc_ids), (doc["text"] or "").lower()
            out.doc_ids.append(doc["doc_id"])
            if settings.exact:
                first = first_of_key.setdefault(_exact_digest(text), pos)
                if first != pos:
                    out.exact_of[pos] = first
                    continue
            out.reps.append(pos)
            texts.append(text)
        if settings.near and texts:
            hashes, lengths = word_hashes(texts, lowered=True)
            units = (hashes, lengths) if settings.shingle_unit == "word" else char_values(texts, lowered=True)
            shingles, counts = shingle_hashes(*units, settings.shingle_size)
            signatures.append(minhash_signatures(shingles, counts, perms))
            usable.append(counts > 0)
            if settings.verify == "words":
                sketches.append(bag_sketches(hashes, lengths, settings.sketch_size))
    if settings.near and out.reps:
        out.signatures, out.usable = np.concatenate(signatures), np.concatenate(usable)
        signatures.clear()  # the batches' copies: keep one
        out.sketches = Sketches.concat(sketches) if sketches else None
    return out


def duplicates_of(got: Collected, settings: DedupSettings) -> dict[str, dict[str, Any]]:
    """``find_duplicates``'s answer from what ``collect`` kept."""
    ids = got.doc_ids
    survivor = {p: p for p in got.reps}  # representative position -> survivor position
    records: dict[int, dict[str, Any]] = {}  # position -> record
    if settings.near and got.signatures is not None:
        near = near_clusters(got.signatures, got.usable, settings, got.sketches)
        for k, pos in enumerate(got.reps):
            survivor[pos] = root = got.reps[near.root[k]]
            if root != pos:
                other, similarity = near.link[k]
                records[pos] = {"kind": "near", "of": ids[root], "jaccard": round(similarity, 4)}
                if got.reps[other] != root:
                    records[pos]["match"] = ids[got.reps[other]]
    for pos, first in got.exact_of.items():
        records[pos] = {"kind": "exact", "of": ids[survivor[first]]}
        if survivor[first] != first:
            records[pos]["match"] = ids[first]
    return {ids[pos]: records[pos] for pos in sorted(records)}


def find_duplicates(docs: Iterable[dict[str, Any]], settings: DedupSettings) -> dict[str, dict[str, Any]]:
    """Map from each removed doc_id to ``{"kind": "exact"|"near", "of": surviving doc_id, ...}``.

    ``of`` is always the first document of the removed one's cluster in input order, which is kept.
    ``kind`` says how the document was found: ``"exact"`` when its normalised text equals that of ``of``
    (or of ``match`` when given), ``"near"`` when its similarity with ``match`` (or with ``of`` when no
    ``match`` is given) is ``jaccard`` >= threshold: the Jaccard of their bags of words (``verify: words``,
    exact up to ``sketch_size`` words) or of their shingles as the signatures estimate it. Clusters are
    transitive: A~B and B~C put A, B and C together even when A and C are further apart.
    """
    return duplicates_of(collect(docs, settings), settings)


def dedup_snapshot(ref, settings: DedupSettings, store):
    """The snapshot of ``ref`` without its duplicates; ``removed.jsonl`` beside it says which and why."""
    import json

    from tasks.core import snapshot

    def rows():
        for table in snapshot.iter_tables(ref):
            for doc_id, text in zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()):
                yield {"doc_id": doc_id, "text": text}

    def produce(stats: dict, extra: dict):
        removed = find_duplicates(rows(), settings)
        import pyarrow as pa

        for table in snapshot.iter_tables(ref):
            keep = pa.array([d not in removed for d in table.column("doc_id").to_pylist()], type=pa.bool_())
            yield table.filter(keep)  # typed: an empty list alone would be a null array, which filter refuses
        kinds = [r["kind"] for r in removed.values()]
        stats.update(exact_duplicates=kinds.count("exact"), near_duplicates=kinds.count("near"),
                     kept=ref.rows - len(removed))
        extra["removed.jsonl"] = "".join(json.dumps({"doc_id": d, **r}) + "\n" for d, r in removed.items())

    return snapshot.materialize(store, "dedup", input_fingerprint=ref.fingerprint, params=settings.model_dump(),
                                code_version=CODE_VERSION, produce=produce)


@task(name="dedup", cache_policy=NO_CACHE)
def dedup_task(ref, settings: DedupSettings, store: str):
    return dedup_snapshot(ref, settings, store)
