"""Near duplicates from signatures: LSH band buckets give candidate pairs, the bag-of-words sketches (or the
signatures' estimated Jaccard) verify them, union-find joins them into clusters whose first document (in input
order) survives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.data.dedup.minhash import mix64
from tasks.data.dedup.settings import DedupSettings
from tasks.data.dedup.sketch import Sketches, sketch_jaccard

_U64 = np.uint64
_PAIR_WINDOW = 16  # in a band bucket, each document is checked against this many earlier members


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


def near_clusters(signatures: np.ndarray, usable: np.ndarray, settings: DedupSettings,
                  sketches: Sketches | None = None) -> NearResult:
    """Cluster documents whose similarity (``settings.verify``: bag-of-words Jaccard from ``sketches``, or
    the signatures' estimated Jaccard) reaches the threshold; documents with ``usable`` False stay alone."""
    left, right = candidate_pairs(signatures, np.flatnonzero(usable), *settings.banding())
    if settings.verify == "words":
        if sketches is None:
            raise ValueError("verify: words needs the documents' sketches")
        similarity = sketch_jaccard(sketches, left, right)
    else:
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
