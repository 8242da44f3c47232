"""Near-dedup settings study: which shingles, thresholds, banding and verification find near copies of short
and long documents without removing documents that merely share long passages.

The sets are bench/dedup_sets.py's (five sets from WikiText-2, Tiny Shakespeare and Self-Instruct, each with
planted near copies at 1-10 % edited words, exact copies, hard negatives sharing 60-80 % of their words as
passages and far ones sharing 20-50 %), built for each seed; quality is pairwise over clusters, pooled over
the seeds. Every setting runs tunegate's own dedup (tasks/data/dedup) with only the named fields changed
from the current defaults. Columns: P, R, F1; hard/far: negatives wrongly clustered (share); cand/doc: LSH
candidate pairs per document (the verification work); bg/1M: candidate pairs among the unrelated originals
per million such pairs (what grows with the square of the corpus: at 10^6 documents, 1 per million is
500,000 pairs to verify).

    .venv/bin/python bench/dedup_study.py [--seeds 0 1 2] [--sets wiki-short ...] [--full]
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.dedup_sets import (CORPORA, SET_NAMES, bag_jaccard, build_set, clusters_from_removed,  # noqa: E402
                              negatives_removed, pair_counts, scores, shingle_jaccard)
from tasks.data.dedup.clusters import candidate_pairs  # noqa: E402
from tasks.data.dedup.settings import DedupSettings  # noqa: E402
from tasks.data.dedup.stage import collect, duplicates_of  # noqa: E402

OLD_DEFAULTS = {"shingle_size": 5, "verify": "signature", "threshold": 0.8, "candidate_threshold": 0.8}


def _sig(size: int, t: float, unit: str = "word", **kw) -> tuple[str, dict]:
    """Classic MinHash LSH: banding from the threshold, verified on the signatures' estimate."""
    label = f"{unit[0]}{size} signature t={t}" + "".join(f" {k}={v}" for k, v in kw.items())
    return label, {"shingle_unit": unit, "shingle_size": size, "verify": "signature", "threshold": t,
                   "candidate_threshold": t, **kw}


def _words(size: int, t: float, cand: float, unit: str = "word", **kw) -> tuple[str, dict]:
    """Candidates from shingle LSH (banding for recall at ``cand``), verified on the bag of words."""
    label = f"{unit[0]}{size}>{cand} words t={t}" + "".join(f" {k}={v}" for k, v in kw.items())
    return label, {"shingle_unit": unit, "shingle_size": size, "verify": "words", "threshold": t,
                   "candidate_threshold": cand, **kw}


GRID: list[tuple[str, dict]] = [
    ("w5 signature t=0.8 (old defaults)", OLD_DEFAULTS),
    *[_sig(5, t) for t in (0.7, 0.6, 0.5, 0.4)],
    *[_sig(3, t) for t in (0.8, 0.7, 0.6, 0.5)],
    *[_sig(2, t) for t in (0.7, 0.6)],
    *[_sig(1, t) for t in (0.8, 0.7)],
    *[_sig(k, t, "char") for k in (5, 8) for t in (0.8, 0.7, 0.6)],
    _sig(5, 0.5, num_perm=256),
    *[_words(3, t, 0.5) for t in (0.7, 0.75, 0.78, 0.8, 0.81, 0.82, 0.85)],
    *[_words(3, t, 0.5, sketch_size=256) for t in (0.8, 0.82)],
    _words(2, 0.8, 0.6), _words(4, 0.8, 0.4), _words(5, 0.8, 0.35), _words(5, 0.8, 0.3),
    _words(5, 0.8, 0.5, "char"),
    _words(3, 0.8, 0.5, sketch_size=128), _words(3, 0.8, 0.5, sketch_size=1024),
    _words(3, 0.8, 0.5, num_perm=64), _words(3, 0.8, 0.5, bands=32, rows=4), _words(3, 0.8, 0.5, bands=64, rows=2),
]
_COLLECT_KEYS = ("shingle_unit", "shingle_size", "num_perm", "seed", "sketch_size")


def commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "tasks/data/dedup"],
                               capture_output=True, text=True).stdout.strip()
        return out + (" + uncommitted tasks/data/dedup changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def similarity_ranges(planted) -> str:
    """Per planted kind, the range of bag-of-words and word 3-/5-gram Jaccard with the document it was made
    from."""
    text = {d["doc_id"]: d["text"] for d in planted.docs}
    parts = []
    for kind in ("near", "hard", "far"):
        ids = [d for d, k in planted.kind_of.items() if k == kind]
        cols = []
        for label, fn in (("bag", bag_jaccard), ("w3", lambda a, b: shingle_jaccard(a, b, 3)),
                          ("w5", shingle_jaccard)):
            v = np.array([fn(text[d], text[planted.source_of[d]]) for d in ids])
            cols.append(f"{label} {v.min():.2f}-{v.max():.2f}")
        parts.append(f"{kind} ({len(ids)}): " + ", ".join(cols))
    return "; ".join(parts)


def run(set_names: list[str], seeds: list[int], grid: list[tuple[str, dict]], corpora: Path) -> dict:
    """{set: {label: {"counts": (both, true, predicted), "neg": Counter, "cand": int, "docs": int}}}."""
    results: dict[str, dict] = {}
    for name in set_names:
        per = results.setdefault(name, {label: {"counts": np.zeros(3, dtype=np.int64), "neg": Counter(),
                                                "kinds": Counter(), "cand": 0, "docs": 0, "bg": 0, "bg_pairs": 0}
                                        for label, _ in grid})
        for seed in seeds:
            planted = build_set(name, seed, corpora)
            if seed == seeds[0]:
                print(f"  {name}: {len(planted.docs)} docs {dict(planted.kinds)} (seed {seed}; originals dropped as "
                      f"alike: {planted.dropped_originals}); {similarity_ranges(planted)}", flush=True)
            ids = [d["doc_id"] for d in planted.docs]
            cache: dict[tuple, object] = {}
            for label, fields in grid:
                settings = DedupSettings(**fields)
                key = tuple(getattr(settings, k) for k in _COLLECT_KEYS)
                if key not in cache:
                    cache[key] = collect(planted.docs, settings.model_copy(update={"verify": "words"}))
                got = cache[key]
                removed = duplicates_of(got, settings)
                r = per[label]
                r["counts"] += pair_counts(planted.truth, clusters_from_removed(ids, removed))
                r["neg"] += negatives_removed(planted, removed)
                r["kinds"] += Counter(k for k in planted.kind_of.values() if k in ("hard", "far"))
                left, right = candidate_pairs(got.signatures, np.flatnonzero(got.usable), *settings.banding())
                r["cand"] += len(left)
                r["docs"] += len(planted.docs)
                original = np.array([planted.kind_of[got.doc_ids[p]] == "original" for p in got.reps])
                r["bg"] += int(np.count_nonzero(original[left] & original[right]))
                r["bg_pairs"] += int(original.sum()) * (int(original.sum()) - 1) // 2
    return results


def _row(cells: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    rule = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([_row(header, widths), rule, *(_row(r, widths) for r in rows)])


def detail_rows(results: dict, labels: list[str]) -> list[list[str]]:
    rows = []
    for name, per in results.items():
        for label in labels:
            r = per[label]
            q = scores(*r["counts"])
            neg = [f"{r['neg'][k] / max(1, r['kinds'][k]):.1%}" for k in ("hard", "far")]
            rows.append([name, label, f"{q['precision']:.4f}", f"{q['recall']:.4f}", f"{q['f1']:.4f}", *neg,
                         f"{r['cand'] / max(1, r['docs']):.2f}", f"{1e6 * r['bg'] / max(1, r['bg_pairs']):.0f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=list(SET_NAMES), choices=SET_NAMES)
    parser.add_argument("--full", action="store_true", help="P, R, F1 of every setting on every set")
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    args = parser.parse_args(argv)

    started, cpu = time.perf_counter(), time.process_time()
    defaults = DedupSettings()
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"commit: {commit()}; seeds {args.seeds}; pooled pairwise P/R/F1 over the seeds")
    print(f"current defaults: {defaults.model_dump(exclude={'exact', 'near', 'seed', 'bands', 'rows'})}, "
          f"banding {defaults.banding()}")
    print("sets (first seed; Jaccard of each planted document with the one it was made from):")
    results = run(args.sets, args.seeds, GRID, args.corpora)
    labels = [label for label, _ in GRID]

    def min_f1(label: str) -> float:
        return min(scores(*results[n][label]["counts"])["f1"] for n in args.sets)

    def background(label: str) -> float:
        return 1e6 * sum(results[n][label]["bg"] for n in args.sets) / max(
            1, sum(results[n][label]["bg_pairs"] for n in args.sets))

    print("\nF1 per set, the least of them, and bg/1M over all sets:\n")
    rows = []
    for label in labels:
        f1 = [scores(*results[name][label]["counts"])["f1"] for name in args.sets]
        rows.append([label, *(f"{v:.4f}" for v in f1), f"{min(f1):.4f}", f"{background(label):.1f}"])
    print(table(["setting", *args.sets, "min", "bg/1M"], rows))

    default_label = next((label for label, fields in GRID
                          if DedupSettings(**fields) == defaults), None)
    # the best: highest least F1, then fewest background candidates
    best = min(labels, key=lambda lb: (-min_f1(lb), background(lb)))
    chosen = [labels[0]] + [lb for lb in dict.fromkeys([best, default_label]) if lb]
    print(f"\nper set: the old defaults, the best (least F1, then bg/1M: {best}) and the current defaults "
          f"({default_label or 'not in the grid'}):\n")
    header = ["set", "setting", "P", "R", "F1", "hard", "far", "cand/doc", "bg/1M"]
    print(table(header, detail_rows(results, labels if args.full else chosen)))
    print(f"\n{time.perf_counter() - started:.0f} s wall, {time.process_time() - cpu:.0f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
