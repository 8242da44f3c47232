"""Near-dedup benchmark: tunegate's dedup against a straightforward datasketch pipeline, side by side.

Both run in this one process, on one core, on the same planted set built from the text corpora in
../shared/eval/corpora (WikiText-2 test paragraphs and Tiny Shakespeare):

- originals: mosaics of random word spans from the corpora (so they are distinct but read like text);
- near duplicates of some originals: word insertions, deletions, substitutions and adjacent swaps at a
  known rate (0.3-1.2 % of the words, at least one edit), kept only if their word 5-gram Jaccard with the
  document they were made from is >= --min-jaccard; a quarter are made from an earlier near duplicate
  (chains that only transitive clustering gets right);
- exact copies (case and whitespace changed) of originals or near duplicates;
- hard negatives: an original's span glued to other text, or heavily edited, with Jaccard <= 0.6: they
  share a lot with an original but must not be removed.

Quality is pairwise over clusters: precision = correctly clustered pairs / predicted pairs, recall =
correctly clustered pairs / planted pairs.

    .venv/bin/python bench/dedup.py [--docs 20000] [--repeat 3]
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one thread for both sides (tests import this file: leave their environment be)
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402

import numpy as np  # noqa: E402

CORPORA = ROOT.parent / "shared" / "eval" / "corpora"
_WORD = re.compile(r"\w+", re.UNICODE)


# ------------------------------------------------------------------------------------------ planted set


@dataclass
class Planted:
    """The documents in snapshot order, each document's true cluster, and what was planted."""

    docs: list[dict[str, str]]
    truth: dict[str, int]  # doc_id -> cluster id (singletons have their own)
    kinds: Counter = field(default_factory=Counter)
    near_jaccard: list[float] = field(default_factory=list)  # each near duplicate vs the doc it came from
    hard_jaccard: list[float] = field(default_factory=list)  # each hard negative vs its original


def corpus_words(corpora: Path = CORPORA) -> list[str]:
    """The corpora's running text as whitespace-separated tokens (headings and speaker labels dropped)."""
    tokens: list[str] = []
    wiki = corpora / "wikitext-2-raw" / "wiki.test.raw"
    for line in wiki.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.strip().startswith("="):
            tokens.extend(line.split())
    shakespeare = corpora / "tinyshakespeare" / "input.txt"
    for line in shakespeare.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.rstrip().endswith(":"):
            tokens.extend(line.split())
    return tokens


def synthetic_words(n: int = 200_000, seed: int = 0) -> list[str]:
    """A Zipf-distributed stream over made-up words, for when the corpora are not there."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    vocab = ["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(20_000)]
    ranks = np.minimum(rng.zipf(1.2, size=n), len(vocab)) - 1
    return [vocab[r] for r in ranks]


def shingle_set(text: str, size: int = 5) -> set[tuple[str, ...]]:
    """The document's word shingles, tokenised the way tunegate tokenises (``\\w+`` of lower case)."""
    w = _WORD.findall(text.lower())
    if len(w) < size:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + size]) for i in range(len(w) - size + 1)}


def jaccard(a: str, b: str, size: int = 5) -> float:
    sa, sb = shingle_set(a, size), shingle_set(b, size)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


class _Maker:
    """Builds planted documents from a token stream with one seeded random generator."""

    def __init__(self, stream: list[str], rng: random.Random) -> None:
        self.stream, self.rng = stream, rng

    def span(self, lo: int, hi: int) -> list[str]:
        n = self.rng.randint(lo, hi)
        start = self.rng.randrange(0, len(self.stream) - n)
        return self.stream[start : start + n]

    def original(self) -> list[str]:
        target = self.rng.randint(100, 400)
        words: list[str] = []
        while len(words) < target:
            words += self.span(20, 60)
        return words[:target]

    def edit(self, words: list[str], rate: float) -> list[str]:
        """``words`` with max(1, rate * len) random insertions, deletions, substitutions, adjacent swaps."""
        out = list(words)
        for _ in range(max(1, round(rate * len(words)))):
            op, i = self.rng.choice("idsr"), self.rng.randrange(len(out) - 1)
            if op == "i":
                out.insert(i, self.rng.choice(self.stream))
            elif op == "d":
                del out[i]
            elif op == "s":
                out[i] = self.rng.choice(self.stream)
            else:
                out[i], out[i + 1] = out[i + 1], out[i]
        return out

    def respell(self, text: str) -> str:
        """Same normalised text: case and whitespace changed."""
        choice = self.rng.randrange(3)
        if choice == 0:
            return text.upper()
        if choice == 1:
            return "  " + text.replace(" ", "\n", 5) + "\n"
        return text.replace(" ", "  \t", 3).title()

    def hard_negative(self, words: list[str]) -> list[str]:
        """Shares a lot with ``words`` but clearly is not a near duplicate of it."""
        if self.rng.random() < 0.5:
            keep = round(len(words) * self.rng.uniform(0.35, 0.6))
            start = self.rng.randrange(0, len(words) - keep + 1)
            filler: list[str] = []
            while len(filler) < len(words) - keep:
                filler += self.span(20, 60)
            return filler[: self.rng.randrange(0, len(words) - keep + 1)] + words[start : start + keep] + filler
        return self.edit(words, self.rng.uniform(0.08, 0.15))


def build_planted(n_docs: int = 20_000, seed: int = 0, stream: list[str] | None = None,
                  min_jaccard: float = 0.85, near_share: float = 0.10, exact_share: float = 0.02,
                  hard_share: float = 0.05) -> Planted:
    """``n_docs`` documents in shuffled order with planted near duplicates, exact copies, hard negatives."""
    rng = random.Random(seed)
    make = _Maker(stream if stream is not None else corpus_words(), rng)
    n_near, n_exact, n_hard = round(n_docs * near_share), round(n_docs * exact_share), round(n_docs * hard_share)
    n_orig = n_docs - n_near - n_exact - n_hard
    docs: list[tuple[str, int]] = []  # (text, cluster)
    planted = Planted(docs=[], truth={})
    originals = [" ".join(make.original()) for _ in range(n_orig)]
    docs += [(text, c) for c, text in enumerate(originals)]

    family: dict[int, list[str]] = {}  # cluster -> its near duplicates so far
    while planted.kinds["near"] < n_near:
        c = rng.randrange(n_orig)
        parents = [originals[c]] + family.get(c, [])
        parent = parents[-1] if len(parents) > 1 and rng.random() < 0.25 else parents[0]
        text = " ".join(make.edit(parent.split(), rng.uniform(0.003, 0.012)))
        similarity = jaccard(text, parent)
        if similarity < min_jaccard or text == parent:
            continue
        family.setdefault(c, []).append(text)
        docs.append((text, c))
        planted.kinds["near"] += 1
        planted.near_jaccard.append(similarity)
    for _ in range(n_exact):
        c = rng.randrange(n_orig)
        docs.append((make.respell(rng.choice([originals[c]] + family.get(c, []))), c))
        planted.kinds["exact"] += 1
    while planted.kinds["hard"] < n_hard:
        c = rng.randrange(n_orig)
        text = " ".join(make.hard_negative(originals[c].split()))
        similarity = jaccard(text, originals[c])
        if similarity > 0.6:
            continue
        docs.append((text, n_orig + planted.kinds["hard"]))
        planted.kinds["hard"] += 1
        planted.hard_jaccard.append(similarity)
    planted.kinds["original"] = n_orig

    rng.shuffle(docs)
    for i, (text, cluster) in enumerate(docs):
        doc_id = f"d{i:06d}"
        planted.docs.append({"doc_id": doc_id, "text": text})
        planted.truth[doc_id] = cluster
    return planted


# -------------------------------------------------------------------------------------------- quality


def clusters_from_removed(doc_ids: list[str], removed: dict[str, dict]) -> dict[str, str]:
    """doc_id -> the kept doc_id it was folded into (itself when kept), following chains to the end."""
    label = {}
    for d in doc_ids:
        seen, x = {d}, d
        while x in removed:
            x = removed[x]["of"]
            if x in seen:
                break
            seen.add(x)
        label[d] = x
    return label


def pair_scores(truth: dict[str, int], predicted: dict[str, str]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of ``predicted`` clusters against ``truth``."""

    def pairs(sizes) -> int:
        return sum(s * (s - 1) // 2 for s in sizes)

    both = pairs(Counter((truth[d], predicted[d]) for d in truth).values())
    true_pairs = pairs(Counter(truth.values()).values())
    pred_pairs = pairs(Counter(predicted.values()).values())
    precision = both / pred_pairs if pred_pairs else 1.0
    recall = both / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "pairs": true_pairs, "found_pairs": pred_pairs}


# ---------------------------------------------------------------------------------- the datasketch side


def datasketch_dedup(docs, num_perm: int, threshold: float, shingle_size: int, seed: int) -> dict[str, dict]:
    """The straightforward pipeline: exact sha256, then per document a datasketch MinHash (update_batch
    over its word shingles), an LSH query against the kept ones, verification by estimated Jaccard, and an
    insert if nothing matched. Removed docs point at the best matching kept doc."""
    from datasketch import MinHash, MinHashLSH

    removed: dict[str, dict] = {}
    first_of: dict[str, str] = {}
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[str, MinHash] = {}
    for doc in docs:
        doc_id, text = doc["doc_id"], doc["text"]
        key = hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()
        if key in first_of:
            removed[doc_id] = {"kind": "exact", "of": first_of[key]}
            continue
        first_of[key] = doc_id
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch([" ".join(s).encode() for s in shingle_set(text, shingle_size)] or [b""])
        best = None
        for cand in lsh.query(m):
            similarity = m.jaccard(kept[cand])
            if similarity >= threshold and (best is None or similarity > best[1]):
                best = (cand, similarity)
        if best is not None:
            removed[doc_id] = {"kind": "near", "of": best[0]}
            continue
        lsh.insert(doc_id, m)
        kept[doc_id] = m
    return removed


def cluster_pairs(planted: Planted, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` pairs of documents from the same planted cluster (first two members of each)."""
    by_cluster: dict[int, list[str]] = {}
    for d, c in planted.truth.items():
        by_cluster.setdefault(c, []).append(d)
    return [(m[0], m[1]) for m in by_cluster.values() if len(m) > 1][:limit]


def estimator_error(planted: Planted, num_perm: int, seed: int, shingle_size: int,
                    limit: int = 2000) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of (estimated - true) Jaccard over planted pairs, for both sides."""
    from datasketch import MinHash

    from tasks.data.dedup.minhash import sign_texts
    from tasks.data.dedup.settings import DedupSettings

    text = {d["doc_id"]: d["text"] for d in planted.docs}
    pairs = cluster_pairs(planted, limit)
    truth = np.array([jaccard(text[a], text[b], shingle_size) for a, b in pairs])
    settings = DedupSettings(num_perm=num_perm, seed=seed, shingle_size=shingle_size)
    left, _ = sign_texts([text[a] for a, _ in pairs], settings)
    right, _ = sign_texts([text[b] for _, b in pairs], settings)
    ours = (left == right).mean(axis=1)

    def ds(t: str) -> MinHash:
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch([" ".join(s).encode() for s in shingle_set(t, shingle_size)])
        return m

    theirs = np.array([ds(text[a]).jaccard(ds(text[b])) for a, b in pairs])
    return {"tunegate": (float((ours - truth).mean()), float((ours - truth).std())),
            "datasketch": (float((theirs - truth).mean()), float((theirs - truth).std()))}


# ------------------------------------------------------------------------------------------------ main


@dataclass
class Timing:
    """The fastest of several runs: CPU seconds of this process (what one core spent) and wall seconds."""

    cpu: float = float("inf")
    wall: float = float("inf")


def _timed(fn, repeat: int) -> tuple[Timing, object]:
    """(fastest CPU and wall time over ``repeat`` calls, result of the last call)."""
    best, result = Timing(), None
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        result = fn()
        best.cpu = min(best.cpu, time.process_time() - cpu)
        best.wall = min(best.wall, time.perf_counter() - wall)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20_000, help="documents in the planted set")
    parser.add_argument("--seed", type=int, default=0, help="planted-set seed")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the fastest counts")
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--shingle-size", type=int, default=5)
    parser.add_argument("--min-jaccard", type=float, default=0.85, help="least Jaccard of a planted near pair")
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    args = parser.parse_args(argv)

    from tasks.data.dedup.settings import DedupSettings
    from tasks.data.dedup.stage import find_duplicates

    started = time.perf_counter()
    planted = build_planted(args.docs, args.seed, corpus_words(args.corpora), min_jaccard=args.min_jaccard)
    built = time.perf_counter() - started
    docs, ids = planted.docs, [d["doc_id"] for d in planted.docs]
    settings = DedupSettings(num_perm=args.num_perm, threshold=args.threshold, shingle_size=args.shingle_size)

    ours_t, ours = _timed(lambda: find_duplicates(docs, settings), args.repeat)
    base_t, base = _timed(lambda: datasketch_dedup(docs, args.num_perm, args.threshold, args.shingle_size,
                                                   settings.seed), args.repeat)
    rows = [("datasketch baseline", base_t, pair_scores(planted.truth, clusters_from_removed(ids, base))),
            ("tunegate dedup", ours_t, pair_scores(planted.truth, clusters_from_removed(ids, ours)))]

    nj, hj = np.array(planted.near_jaccard), np.array(planted.hard_jaccard)
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"machine: {describe('numpy', 'datasketch')}; both sides in one process, 1 thread; docs/s/core = docs / CPU seconds")
    print(f"planted set: {len(docs)} docs ({dict(planted.kinds)}), built in {built:.1f}s; "
          f"near pairs Jaccard min {nj.min():.3f} median {np.median(nj):.3f}; "
          f"hard negatives Jaccard max {hj.max():.3f} median {np.median(hj):.3f}; {rows[0][2]['pairs']} true pairs")
    print(f"settings: num_perm {args.num_perm}, threshold {args.threshold}, shingle {args.shingle_size}, "
          f"tunegate banding {settings.banding()} (bands, rows); best of {args.repeat}")
    print()
    header = ["pipeline", "CPU s", "docs/s/core", "vs baseline", "wall s", "wall vs base", "precision", "recall",
              "F1"]
    table = [[name, f"{t.cpu:.2f}", f"{len(docs) / t.cpu:.0f}", f"{base_t.cpu / t.cpu:.2f}x", f"{t.wall:.2f}",
              f"{base_t.wall / t.wall:.2f}x", f"{q['precision']:.4f}", f"{q['recall']:.4f}", f"{q['f1']:.4f}"]
             for name, t, q in rows]
    widths = [max(len(c) for c in column) for column in zip(header, *table)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    for cells in table:
        print("| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |")
    errors = estimator_error(planted, args.num_perm, settings.seed, args.shingle_size)
    print()
    print("estimated - true Jaccard on planted cluster pairs (mean, std): "
          + "; ".join(f"{k} {m:+.4f} {s:.4f}" for k, (m, s) in errors.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
