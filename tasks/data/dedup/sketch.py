"""Bag-of-words sketches: what a candidate pair is verified on when ``verify`` is ``"words"``.

A document's bag of words is the set of (word, k) for the k-th occurrence of each word in it, so the Jaccard
similarity of two bags is sum(min(count)) / sum(max(count)) over the words (the multiset Jaccard). Each
element becomes a 32-bit value (from the word's 64-bit hash and k); a document's sketch is the smallest
``sketch_size`` distinct values, in ascending order. Two sketches are compared on the values up to the
smaller of their cut-offs (a sketch holds every value of its document up to its own cut-off: its largest
value when the document has more than ``sketch_size``, all of them otherwise), which is exact when both
documents have at most ``sketch_size`` words and a bottom-k estimate beyond (standard error about
sqrt(J (1 - J) / sketch_size)).

Why words and not the LSH shingles: a copy with 10 % of its words edited keeps about 82 % of its bag of
words but only about half of its word 3-grams, while a different document that shares 80 % of its text as
long passages keeps 80 % of either; only the bag separates the two (bench/dedup_study.py measures it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.data.dedup.minhash import mix64

_U64 = np.uint64
_FULL = np.int64(1 << 32)  # the cut-off of a sketch that holds all of its document's values
_DOC_BITS = 16  # documents per call: up to 2**16, the rest of a 64-bit sort key is the value
_PAIRS_PER_CHUNK = 4096


@dataclass
class Sketches:
    """Sketches of documents 0..n-1: ``values[starts[i]:starts[i + 1]]`` ascending, complete up to
    ``cutoff[i]``."""

    values: np.ndarray  # uint32
    starts: np.ndarray  # int64, n + 1
    cutoff: np.ndarray  # int64, n

    @classmethod
    def concat(cls, parts: list[Sketches]) -> Sketches:
        """The sketches of several batches as one, in order."""
        lengths = np.concatenate([np.diff(p.starts) for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        return cls(values=np.concatenate([p.values for p in parts]) if parts else np.zeros(0, dtype=np.uint32),
                   starts=np.concatenate(([0], np.cumsum(lengths))).astype(np.int64),
                   cutoff=np.concatenate([p.cutoff for p in parts]) if parts else np.zeros(0, dtype=np.int64))

    def nbytes(self) -> int:
        return self.values.nbytes + self.starts.nbytes + self.cutoff.nbytes


def _runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Per element of a sorted array, how many equal elements come before it."""
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
    starts = np.flatnonzero(new)
    return np.arange(len(sorted_keys)) - np.repeat(starts, np.diff(np.append(starts, len(sorted_keys))))


def bag_sketches(word_hashes: np.ndarray, lengths: np.ndarray, size: int) -> Sketches:
    """The sketches of a batch of documents from their words' 64-bit hashes (one document after another,
    ``lengths`` words each)."""
    n_docs = len(lengths)
    if n_docs > 1 << _DOC_BITS:
        cut = np.concatenate(([0], np.cumsum(lengths)))
        step = 1 << _DOC_BITS
        return Sketches.concat([bag_sketches(word_hashes[cut[lo]:cut[min(lo + step, n_docs)]],
                                             lengths[lo:lo + step], size) for lo in range(0, n_docs, step)])
    owner = np.repeat(np.arange(n_docs, dtype=_U64), lengths)
    value_bits = _U64(64 - _DOC_BITS)
    # words sorted by (document, hash): the k-th occurrence of a word is k equal keys along
    keys = np.sort((owner << value_bits) | (word_hashes >> _U64(_DOC_BITS)))
    occurrence = _runs(keys).astype(_U64)
    words = keys & ((_U64(1) << value_bits) - _U64(1))
    values = (mix64(words + occurrence * _U64(0x9E3779B97F4A7C15)) >> _U64(32))
    # per document, its distinct values ascending; keep the smallest `size`
    keys = np.sort((keys >> value_bits << _U64(32)) | values)  # (np.unique hashes first: slower here)
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
    doc = (keys >> _U64(32)).astype(np.int64)
    rank = _runs(doc)
    keep = rank < size
    counts = np.bincount(doc[keep], minlength=n_docs)
    truncated = np.bincount(doc, minlength=n_docs) > size
    kept = (keys[keep] & _U64(0xFFFFFFFF)).astype(np.uint32)
    starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    cutoff = np.full(n_docs, _FULL, dtype=np.int64)
    cutoff[truncated] = kept[starts[1:][truncated] - 1]
    return Sketches(values=kept, starts=starts, cutoff=cutoff)


def _pair_keys(sketches: Sketches, docs: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pairs 0..len(docs)-1: (pair << 32 | value) of each value of ``docs[pair]``'s sketch up to
    ``limit[pair]``, ascending, and the pair of each."""
    lengths = sketches.starts[docs + 1] - sketches.starts[docs]
    pair = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
    offset = np.repeat(sketches.starts[docs] - (np.cumsum(lengths) - lengths), lengths)
    values = sketches.values[np.arange(len(pair)) + offset].astype(np.int64)
    keep = values <= limit[pair]
    return (pair[keep] << 32) | values[keep], pair[keep]


def sketch_jaccard(sketches: Sketches, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Bag-of-words Jaccard of each pair (left[k], right[k]) from their sketches."""
    out = np.empty(len(left), dtype=np.float64)
    for lo in range(0, len(left), _PAIRS_PER_CHUNK):
        a, b = left[lo:lo + _PAIRS_PER_CHUNK], right[lo:lo + _PAIRS_PER_CHUNK]
        limit = np.minimum(sketches.cutoff[a], sketches.cutoff[b])
        a_keys, a_pair = _pair_keys(sketches, a, limit)
        b_keys, b_pair = _pair_keys(sketches, b, limit)
        if len(a_keys):
            at = np.minimum(np.searchsorted(a_keys, b_keys), len(a_keys) - 1)
            both = np.bincount(b_pair[a_keys[at] == b_keys], minlength=len(a))
        else:
            both = np.zeros(len(a), dtype=np.int64)
        union = np.bincount(a_pair, minlength=len(a)) + np.bincount(b_pair, minlength=len(a)) - both
        out[lo:lo + len(a)] = both / np.maximum(union, 1)
    return out
