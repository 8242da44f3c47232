"""Dedup: exact (sha256 of normalised text), then near (MinHash LSH over word shingles), in batches.

How a run goes:

1. **Exact.** Documents whose normalised text (lower case, whitespace collapsed) has the same sha256 form
   one group; its first document in input (snapshot) order represents it. Only representatives go on.
2. **Signatures**, a batch of documents at a time, all in numpy: the words (``\\w+`` runs of the
   lower-cased text) become 64-bit hashes computed from the code points, each run of ``shingle_size``
   words one 64-bit shingle hash, and ``num_perm`` hash functions ``h_i(x) = a_i * x + b_i (mod 2**32)``
   are applied to every shingle of the batch as one matrix operation; the minimum per function and
   document is the document's MinHash signature (``num_perm`` x uint32). A signature is a pure function
   of the text and the settings: no Python ``hash()``, no dependence on other documents.
3. **Candidates.** The signature is cut into ``bands`` slices of ``rows`` values; documents whose slices
   agree in some band are candidates. Buckets are found by sorting each band's keys.
4. **Verification.** A candidate pair becomes an edge when its estimated Jaccard similarity (the share of
   equal signature values) is at least ``threshold``.
5. **Clusters.** Edges join documents with union-find; the first document of each cluster in input order
   survives and every other one is recorded with that survivor's id.

Memory: one signature per exact-group representative (512 bytes at 128 permutations), the document ids
and the exact-key table; text is held one batch at a time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

CODE_VERSION = "dedup-2"
_WORD = re.compile(r"\w+", re.UNICODE)
_U64 = np.uint64
_BATCH_DOCS = 256  # documents tokenised and signed together, at most ... (small enough to stay in cache)
_BATCH_CHARS = 1 << 18  # ... and about this many characters (a longer document goes alone)
_CHUNK_SHINGLES = 8192  # shingles per matrix operation: num_perm x this many uint32 (4 MiB at 128 perms)
_PAIR_WINDOW = 16  # in a band bucket, each document is checked against this many earlier members
_CANDIDATE_RECALL = 0.99  # derived banding: a pair exactly at the threshold becomes a candidate this often


class DedupSettings(BaseModel):
    """Exact and near-duplicate removal."""

    model_config = ConfigDict(extra="forbid")

    exact: bool = Field(True, description="drop documents whose normalised text is identical")
    near: bool = Field(True, description="drop near duplicates found with MinHash LSH")
    shingle_size: int = Field(5, ge=1, le=32, description="words per shingle")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity that makes a near duplicate")
    seed: int = Field(1, ge=0, lt=2**32, description="MinHash seed")
    bands: int | None = Field(None, ge=1, le=1024,
                              description="LSH bands (with rows); default: derived from threshold and num_perm")
    rows: int | None = Field(None, ge=1, le=1024, validate_default=True,
                             description="signature values per LSH band (with bands)")

    @field_validator("rows")
    @classmethod
    def _banding_fits(cls, rows: int | None, info: ValidationInfo) -> int | None:
        bands, num_perm = info.data.get("bands"), info.data.get("num_perm")
        if (bands is None) != (rows is None):
            raise ValueError("set bands and rows together, or neither (then they follow from threshold)")
        if rows is not None and bands is not None and num_perm is not None and bands * rows > num_perm:
            raise ValueError(f"bands x rows = {bands * rows} exceeds num_perm = {num_perm}")
        return rows

    def banding(self) -> tuple[int, int]:
        """(bands, rows): as set, or the most rows per band that still find a pair at the threshold."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return derive_banding(self.threshold, self.num_perm)


def derive_banding(threshold: float, num_perm: int, recall: float = _CANDIDATE_RECALL) -> tuple[int, int]:
    """The (bands, rows) with the most rows (fewest dissimilar candidates) such that a pair whose Jaccard
    equals ``threshold`` shares at least one band with probability >= ``recall``."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best


def exact_key(text: str) -> str:
    """sha256 of the text lower-cased with all whitespace collapsed."""
    return _exact_digest(text.lower()).hex()


def _exact_digest(lowered: str) -> bytes:
    """``exact_key`` of an already lower-cased text, as 32 raw bytes (what the exact-group table holds)."""
    return hashlib.sha256(" ".join(lowered.split()).encode()).digest()


def words(text: str) -> list[str]:
    """The words shingles are made of: ``\\w+`` runs of the lower-cased text (``word_hashes`` finds the
    same words without making a string of each)."""
    return _WORD.findall(text.lower())


# --------------------------------------------------------------------------------------------- hashing


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64: spreads every input bit over the output."""
    x = x ^ (x >> _U64(30))
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


def position_weights(size: int) -> np.ndarray:
    """One odd 64-bit weight per position 0..size-1: in a word or a shingle, what makes order count."""
    return mix64(np.arange(1, size + 1, dtype=_U64) * _U64(0x9E3779B97F4A7C15)) | _U64(1)


@lru_cache(maxsize=1)
def _bmp_word_chars() -> np.ndarray:
    """bool per code point below 0x10000: whether the ``\\w`` of ``words`` matches it."""
    return np.array([_WORD.match(chr(c)) is not None for c in range(0x10000)], dtype=bool)


@lru_cache(maxsize=1)
def _bmp_char_values() -> np.ndarray:
    """``_char_values`` of every code point below 0x10000, looked up instead of computed."""
    return mix64(np.arange(0x10000, dtype=_U64) + _U64(0x632BE59BD9B4E019))


def _is_word_char(codes: np.ndarray, bmp: np.ndarray, astral: bool) -> np.ndarray:
    """Whether each code point is a word character, exactly as the regex in ``words`` decides.

    ``bmp`` is ``codes`` capped at 0xFFFF; ``astral`` says whether any code point lies above it.
    """
    is_word = _bmp_word_chars()[bmp]
    if astral:
        for c in np.unique(codes[codes > 0xFFFF]).tolist():
            is_word[codes == c] = _WORD.match(chr(c)) is not None
    return is_word


def _char_values(codes: np.ndarray, bmp: np.ndarray, astral: bool) -> np.ndarray:
    """A random-looking 64-bit value per code point: ``mix64(code point + constant)``."""
    values = _bmp_char_values()[bmp]
    if astral:
        above = codes > 0xFFFF
        values[above] = mix64(codes[above].astype(_U64) + _U64(0x632BE59BD9B4E019))
    return values


def word_hashes(texts: list[str], lowered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit hashes of the words of all ``texts`` one after another, and each text's word count.

    The words are those of ``words`` (maximal runs of word characters in the lower-cased text), found on
    the texts' code points as one numpy array instead of one Python string per word. A word's hash is
    ``sum_k char_value(c_k) * position_weight(k) (mod 2**64)`` over its characters, mixed and made odd.
    ``lowered``: the texts are lower-cased already.
    """
    lowered_texts = texts if lowered else [t.lower() for t in texts]
    codes = np.frombuffer("\n".join(lowered_texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    bmp, astral = np.minimum(codes, 0xFFFF), bool(len(codes)) and int(codes.max()) > 0xFFFF
    at = np.flatnonzero(_is_word_char(codes, bmp, astral))  # where the word characters are
    if len(at) == 0:
        return np.zeros(0, dtype=_U64), np.zeros(len(texts), dtype=np.int64)
    first = np.flatnonzero(np.concatenate(([True], at[1:] != at[:-1] + 1)))  # each word's first char in `at`
    lengths = np.diff(np.append(first, len(at)))
    position = np.arange(len(at)) - np.repeat(first, lengths)
    weighted = _char_values(codes[at], bmp[at], astral) * position_weights(int(lengths.max()))[position]
    hashes = mix64(np.add.reduceat(weighted, first)) | _U64(1)
    text_ends = np.cumsum([len(t) + 1 for t in lowered_texts])
    words_before_end = np.searchsorted(at[first], text_ends)
    return hashes, np.diff(np.concatenate(([0], words_before_end)))


def shingle_hashes(hashes: np.ndarray, lengths: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of a batch of documents, and how many belong to each document.

    ``hashes`` holds the documents' word hashes one after another; ``lengths`` the word count of
    each. A document of n >= size words has n - size + 1 shingles, a shorter non-empty one a single
    shingle of all its words, an empty one none. Each document is followed by size - 1 zeros so that no
    window reaches into the next document.
    """
    n_docs = len(lengths)
    padded_starts = np.zeros(n_docs, dtype=np.int64)
    if n_docs > 1:
        padded_starts[1:] = np.cumsum(lengths[:-1] + size - 1)
    total = int(lengths.sum()) + n_docs * (size - 1)
    padded = np.zeros(total + size - 1, dtype=_U64)
    word_pos = np.repeat(padded_starts - np.concatenate(([0], np.cumsum(lengths[:-1]))), lengths)
    padded[word_pos + np.arange(len(hashes))] = hashes

    windows = np.zeros(total, dtype=_U64)
    for k, weight in enumerate(position_weights(size)):
        windows += padded[k : k + total] * weight
    counts = np.where(lengths >= size, lengths - size + 1, (lengths > 0).astype(np.int64))
    first = np.concatenate(([0], np.cumsum(counts[:-1])))
    take = np.repeat(padded_starts - first, counts) + np.arange(int(counts.sum()))
    return mix64(windows[take]), counts


@dataclass
class Permutations:
    """The num_perm hash functions h_i(x) = a_i * x + b_i (mod 2**32), a_i odd, drawn from ``seed``.

    They act on the top 32 bits of the shingle hashes: uint32 arithmetic does twice the work per
    instruction of uint64, and min-wise the result is as good (see the estimator check in bench/dedup.py).
    """

    a: np.ndarray  # (num_perm,) uint32, odd
    b: np.ndarray  # (num_perm, 1) uint32

    @classmethod
    def from_settings(cls, num_perm: int, seed: int) -> Permutations:
        rng = np.random.default_rng(seed)
        a = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32, endpoint=False) | np.uint32(1)
        b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32, endpoint=False)
        return cls(a=a, b=b[:, None])


def minhash_signatures(shingles: np.ndarray, counts: np.ndarray, perms: Permutations) -> np.ndarray:
    """uint32 signatures, one row per document: min over its shingles x of h_i(x >> 32), per function i.

    Shingles are taken ``_CHUNK_SHINGLES`` at a time (memory stays at num_perm x chunk uint32 however long
    a document is); a document spread over several chunks keeps the minimum of their minima. A document
    without shingles gets all ones and must not be compared.
    """
    mins = np.full((len(perms.a), len(counts)), np.iinfo(np.uint32).max, dtype=np.uint32)
    owner = np.repeat(np.arange(len(counts)), counts)
    values32 = (shingles >> _U64(32)).astype(np.uint32)
    for lo in range(0, len(values32), _CHUNK_SHINGLES):
        hi = min(lo + _CHUNK_SHINGLES, len(values32))
        hashed = np.multiply.outer(perms.a, values32[lo:hi])
        hashed += perms.b
        docs = owner[lo:hi]
        starts = np.flatnonzero(np.concatenate(([True], docs[1:] != docs[:-1])))
        docs = docs[starts]
        mins[:, docs] = np.minimum(mins[:, docs], np.minimum.reduceat(hashed, starts, axis=1))
    return np.ascontiguousarray(mins.T)


# ----------------------------------------------------------------------------------- LSH and clusters


def band_key(values: np.ndarray) -> np.ndarray:
    """uint64 key of each document's slice of one band (``values``: documents x signature values)."""
    key = np.zeros(len(values), dtype=_U64)
    for column in range(values.shape[1]):
        key = mix64(key ^ values[:, column].astype(_U64))
    return key


def candidate_pairs(signatures: np.ndarray, members: np.ndarray, bands: int, rows: int,
                    window: int = _PAIR_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of ``members`` (row numbers of ``signatures``, ascending) that share a band.

    One band at a time (memory: a key per member), members are sorted by key, stably, so by position
    among equal keys; each is paired with up to ``window`` earlier members of its bucket: every pair in
    buckets of up to window + 1 documents, a chain through larger ones.
    """
    n = len(signatures)
    found = []
    for band in range(bands):
        keys = band_key(signatures[members, band * rows : (band + 1) * rows])
        order = np.argsort(keys, kind="stable")
        sorted_keys, ordered = keys[order], members[order].astype(np.int64)
        for d in range(1, window + 1):
            same = np.flatnonzero(sorted_keys[d:] == sorted_keys[:-d])
            if len(same) == 0:
                break
            found.append(ordered[same] * n + ordered[same + d])
    pairs = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
    return pairs // max(n, 1), pairs % max(n, 1)


def estimated_jaccard(signatures: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Share of equal signature values for each pair (left[k], right[k]), in chunks of bounded size."""
    out = np.empty(len(left), dtype=np.float64)
    step = max(1, (1 << 20) // signatures.shape[1])
    for lo in range(0, len(left), step):
        hi = lo + step
        out[lo:hi] = np.count_nonzero(signatures[left[lo:hi]] == signatures[right[lo:hi]], axis=1)
    return out / signatures.shape[1]


class UnionFind:
    """Disjoint sets over 0..n-1 whose root is always the smallest member (the first in snapshot order)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)


@dataclass
class NearResult:
    """Per document: the first member of its cluster (``root``), and for each document that is not
    one, the verified neighbour that explains its removal with their similarity (``link``): the root
    itself when they are directly similar, else its most similar neighbour."""

    root: list[int]
    link: dict[int, tuple[int, float]]


def near_clusters(signatures: np.ndarray, usable: np.ndarray, settings: DedupSettings) -> NearResult:
    """Cluster documents whose signatures are similar; documents with ``usable`` False stay alone."""
    left, right = candidate_pairs(signatures, np.flatnonzero(usable), *settings.banding())
    similarity = estimated_jaccard(signatures, left, right)
    keep = similarity >= settings.threshold
    edges = list(zip(left[keep].tolist(), right[keep].tolist(), similarity[keep].tolist()))

    sets = UnionFind(len(signatures))
    for i, j, _ in edges:
        sets.union(i, j)
    root = [sets.find(i) for i in range(len(signatures))]
    link: dict[int, tuple[int, float]] = {}
    for i, j, s in sorted(edges, key=lambda e: -e[2]):  # most similar first; a direct edge to the root wins
        for a, b in ((i, j), (j, i)):
            if root[a] != a and (a not in link or (b == root[a] and link[a][0] != root[a])):
                link[a] = (b, s)
    return NearResult(root=root, link=link)


# ------------------------------------------------------------------------------------------- the pass


@dataclass
class _Collected:
    """What one streaming pass keeps: ids, exact groups, and signatures of the groups' first documents."""

    doc_ids: list[str] = field(default_factory=list)
    exact_of: dict[int, int] = field(default_factory=dict)  # position -> position of its exact group's first
    reps: list[int] = field(default_factory=list)  # positions of exact-group representatives, in order
    signatures: list[np.ndarray] = field(default_factory=list)
    usable: list[np.ndarray] = field(default_factory=list)


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


def sign_texts(texts: list[str], settings: DedupSettings, perms: Permutations | None = None,
               lowered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of ``texts`` (uint32, one row each) and whether each has any shingle."""
    perms = perms or Permutations.from_settings(settings.num_perm, settings.seed)
    shingles, counts = shingle_hashes(*word_hashes(texts, lowered), settings.shingle_size)
    return minhash_signatures(shingles, counts, perms), counts > 0


def _collect(docs: Iterable[dict[str, Any]], settings: DedupSettings) -> _Collected:
    """One pass over ``docs``: exact groups, and signatures of the groups' first documents (if near)."""
    out = _Collected()
    first_of_key: dict[bytes, int] = {}
    perms = Permutations.from_settings(settings.num_perm, settings.seed)
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
            signatures, usable = sign_texts(texts, settings, perms, lowered=True)
            out.signatures.append(signatures)
            out.usable.append(usable)
    return out


def find_duplicates(docs: Iterable[dict[str, Any]], settings: DedupSettings) -> dict[str, dict[str, Any]]:
    """Map from each removed doc_id to ``{"kind": "exact"|"near", "of": surviving doc_id, ...}``.

    ``of`` is always the first document of the removed one's cluster in input order, which is kept.
    ``kind`` says how the document was found: ``"exact"`` when its normalised text equals that of ``of``
    (or of ``match`` when given), ``"near"`` when its estimated Jaccard similarity with ``match`` (or with
    ``of`` when no ``match`` is given) is ``jaccard`` >= threshold. Clusters are transitive: A~B and B~C
    put A, B and C together even when A and C are further apart.
    """
    got = _collect(docs, settings)
    ids = got.doc_ids
    survivor = {p: p for p in got.reps}  # representative position -> survivor position
    records: dict[int, dict[str, Any]] = {}  # position -> record
    if settings.near and got.reps:
        signatures, usable = np.concatenate(got.signatures), np.concatenate(got.usable)
        got.signatures.clear()  # the batches' copies: keep one
        near = near_clusters(signatures, usable, settings)
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
