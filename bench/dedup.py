"""Near-dedup side by side: tunegate's dedup, datasketch set up as a careful user would, and datatrove's MinHash
pipeline, on the same sets (bench/dedup_sets.py: five sets from WikiText-2, Tiny Shakespeare and Self-Instruct
with planted near copies at 1-10 % edited words, exact copies, and negatives sharing 20-80 % of their words as
long passages).

- tunegate: ``find_duplicates`` at its defaults (tasks/data/dedup/settings.py), and at the old defaults (word
  5-grams, threshold 0.8 on the signatures' estimate) for reference;
- datasketch, careful: the same exact pass, the same word shingles, ``MinHash.bulk`` (one set of permutations
  for all documents; xxhash instead of its default sha1) made ``LeanMinHash``, ``MinHashLSH`` with tunegate's
  bands and rows, every candidate pair verified like tunegate's (bag-of-words Jaccard, here exact from
  ``collections.Counter``), union-find with the first document in input order as survivor;
- datatrove (``MinhashDedupSignature`` -> ``Buckets`` -> ``Cluster`` -> ``Filter``, files in a temporary
  folder, one task per step, in this process): at its defaults (word 5-grams, 14 buckets x 8 hashes, no
  verification: a shared bucket makes a duplicate) and with tunegate's shingles and banding (3-grams, 42 x 3);
  its xxhash is called on UTF-8 bytes (``_xxh64_of_str``: the venv's xxhash 4 no longer takes str);
- text-dedup: not installed; it is reported as such (see ``TEXT_DEDUP``).

Everything runs in this one process on one thread, the sides taking turns; docs/s/core = documents / CPU
seconds of the process, best of --repeat. Quality is pairwise over clusters (precision = correctly clustered
pairs / predicted pairs, recall = correctly clustered pairs / planted pairs).

    .venv/bin/python bench/dedup.py [--seed 0] [--repeat 3] [--sets ...]
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one thread for every side (tests import this file: leave their environment be)
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[_var] = "1"
    os.environ["TQDM_DISABLE"] = "1"  # datatrove's progress bars

import argparse  # noqa: E402
import hashlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.dedup_sets import (CORPORA, SET_NAMES, build_set, clusters_from_removed, pair_counts,  # noqa: E402
                              scores, shingle_jaccard)
from bench.dedup_study import commit, table  # noqa: E402
from bench.machine import describe  # noqa: E402
from tasks.data.dedup.settings import DedupSettings  # noqa: E402

_WORD = re.compile(r"\w+", re.UNICODE)
OLD_DEFAULTS = DedupSettings(shingle_size=5, verify="signature", threshold=0.8, candidate_threshold=0.8)
TEXT_DEDUP = ("text-dedup: not installed. 0.4.1 needs Python >= 3.12 (this venv: 3.11); 0.4.0 requires "
              "rich<14 and urllib3<=2.0, which would replace the pinned rich 15.0.0 and urllib3 2.x "
              "(infra/constraints.txt), plus pyspark and unisim")


def _shingles(words: list[str], size: int) -> list[bytes]:
    """tunegate's shingles as strings: each run of ``size`` words, one of all words when fewer."""
    if len(words) < size:
        return [" ".join(words).encode()] if words else []
    return [" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)]


def _bag_jaccard(a: Counter, b: Counter) -> float:
    union = sum((a | b).values())
    return sum((a & b).values()) / union if union else 1.0


def datasketch_dedup(docs: list[dict], settings: DedupSettings) -> dict[str, dict]:
    """The careful datasketch pipeline (module docstring); removed doc_id -> {"of": its cluster's first}."""
    import xxhash
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    removed: dict[str, dict] = {}
    first_of: dict[bytes, str] = {}
    reps: list[int] = []
    for i, doc in enumerate(docs):
        key = hashlib.sha256(" ".join((doc["text"] or "").lower().split()).encode()).digest()
        if key in first_of:
            removed[doc["doc_id"]] = {"kind": "exact", "of": first_of[key]}
        else:
            first_of[key] = doc["doc_id"]
            reps.append(i)
    words = [_WORD.findall((docs[i]["text"] or "").lower()) for i in reps]
    shingles = [_shingles(w, settings.shingle_size) for w in words]
    minhashes = MinHash.bulk(shingles, num_perm=settings.num_perm, seed=settings.seed,
                             hashfunc=xxhash.xxh32_intdigest)
    lean = [LeanMinHash(m) for m in minhashes]
    lsh = MinHashLSH(num_perm=settings.num_perm, params=settings.banding())
    with lsh.insertion_session() as session:
        for k, m in enumerate(lean):
            if shingles[k]:
                session.insert(k, m)
    bags: dict[int, Counter] = {}
    parent = list(range(len(reps)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for k, m in enumerate(lean):
        if not shingles[k]:
            continue
        for j in lsh.query(m):
            if j <= k:
                continue
            if settings.verify == "words":
                a = bags.setdefault(k, Counter(words[k]))
                similarity = _bag_jaccard(a, bags.setdefault(j, Counter(words[j])))
            else:
                similarity = m.jaccard(lean[j])
            if similarity >= settings.threshold:
                rk, rj = find(k), find(j)
                parent[max(rk, rj)] = min(rk, rj)
    for k, i in enumerate(reps):
        root = find(k)
        if root != k:
            removed[docs[i]["doc_id"]] = {"kind": "near", "of": docs[reps[root]]["doc_id"]}
    for record in removed.values():  # an exact copy of a near duplicate points at that one's survivor
        if record["kind"] == "exact" and record["of"] in removed:
            record["of"] = removed[record["of"]]["of"]
    return removed


def _xxh64_of_str(text: str) -> int:
    """datatrove's default shingle hash (``xxhash.xxh64_intdigest`` of the shingle string). Its processing
    extra asks for xxhash<4, which took str; the venv pins xxhash 4.1.0 (infra/constraints.txt), which takes
    bytes only, so datatrove's own call fails: encode as xxhash 3 did (UTF-8)."""
    import xxhash

    return xxhash.xxh64_intdigest(text.encode("utf-8"))


def datatrove_dedup(docs: list[dict], n_grams: int = 5, buckets: int = 14, per_bucket: int = 8) -> dict[str, str]:
    """datatrove's four MinHash steps on ``docs``; doc_id -> cluster label (itself when alone)."""
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from loguru import logger

    logger.remove()
    config = MinhashConfig(n_grams=n_grams, num_buckets=buckets, hashes_per_bucket=per_bucket)
    documents = [Document(text=d["text"] or "", id=d["doc_id"]) for d in docs]
    labels = {d["doc_id"]: d["doc_id"] for d in docs}
    with tempfile.TemporaryDirectory() as tmp:
        signature = MinhashDedupSignature(output_folder=f"{tmp}/sigs", config=config)
        signature._hash_func = _xxh64_of_str  # its default hash, as it runs with the xxhash<4 it asks for
        signature.run(iter(documents), rank=0, world_size=1)
        for bucket in range(buckets):
            MinhashDedupBuckets(input_folder=f"{tmp}/sigs", output_folder=f"{tmp}/buckets",
                                config=config).run(rank=bucket, world_size=buckets)
        MinhashDedupCluster(input_folder=f"{tmp}/buckets", output_folder=f"{tmp}/remove", config=config,
                            save_cluster_id=True).run()
        clusters = Path(tmp, "remove", "000000.clusters")
        if clusters.exists():
            kept = list(MinhashDedupFilter(input_folder=f"{tmp}/remove", load_cluster_ids=True).run(
                iter(documents), rank=0, world_size=1))
            for doc_idx, cluster in np.fromfile(clusters, dtype="<u4").reshape(-1, 2).tolist():
                labels[docs[doc_idx]["doc_id"]] = f"cluster-{cluster}"
            assert len(kept) == len(docs) - (len(labels) - len(set(labels.values())))
    return labels


def estimator_error(planted, settings: DedupSettings, limit: int = 2000) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of (estimated - true) shingle Jaccard over planted near pairs (each copy
    and the document it was made from), for tunegate's signatures and datasketch's."""
    import xxhash
    from datasketch import MinHash

    from tasks.data.dedup.minhash import sign_texts

    text = {d["doc_id"]: d["text"] for d in planted.docs}
    pairs = [(d, planted.source_of[d]) for d, k in planted.kind_of.items() if k == "near"][:limit]
    size = settings.shingle_size
    truth = np.array([shingle_jaccard(text[a], text[b], size) for a, b in pairs])
    left, _ = sign_texts([text[a] for a, _ in pairs], settings)
    right, _ = sign_texts([text[b] for _, b in pairs], settings)
    ours = (left == right).mean(axis=1)
    theirs = MinHash.bulk([_shingles(_WORD.findall(text[d].lower()), size) for pair in pairs for d in pair],
                          num_perm=settings.num_perm, seed=settings.seed, hashfunc=xxhash.xxh32_intdigest)
    theirs = np.array([theirs[2 * k].jaccard(theirs[2 * k + 1]) for k in range(len(pairs))])
    return {"tunegate": (float((ours - truth).mean()), float((ours - truth).std())),
            "datasketch": (float((theirs - truth).mean()), float((theirs - truth).std()))}


def _timed(fn, repeat: int) -> tuple[float, float, object]:
    """(fastest CPU seconds, fastest wall seconds, result of the last call) over ``repeat`` calls."""
    cpu_best = wall_best = float("inf")
    result = None
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        result = fn()
        cpu_best = min(cpu_best, time.process_time() - cpu)
        wall_best = min(wall_best, time.perf_counter() - wall)
    return cpu_best, wall_best, result


def pipelines(defaults: DedupSettings) -> list[tuple[str, object, object]]:
    """(name, function of the documents (timed), function of the documents and its result giving doc_id ->
    cluster label (not timed)) for every side."""
    from tasks.data.dedup.stage import find_duplicates

    def from_removed(docs, removed):
        return clusters_from_removed([d["doc_id"] for d in docs], removed)

    def as_is(docs, labels):
        return labels

    bands, rows = defaults.banding()
    return [
        ("tunegate (defaults)", lambda docs: find_duplicates(docs, defaults), from_removed),
        ("datasketch, careful (same settings)", lambda docs: datasketch_dedup(docs, defaults), from_removed),
        ("datatrove (its defaults: 5-gram, 14x8)", datatrove_dedup, as_is),
        (f"datatrove ({defaults.shingle_size}-gram, {bands}x{rows})",
         lambda docs: datatrove_dedup(docs, defaults.shingle_size, bands, rows), as_is),
        ("tunegate (old defaults: 5-gram, t=0.8)", lambda docs: find_duplicates(docs, OLD_DEFAULTS), from_removed),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="planted-set seed")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side and set; the fastest counts")
    parser.add_argument("--sets", nargs="+", default=list(SET_NAMES), choices=SET_NAMES)
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    args = parser.parse_args(argv)

    defaults = DedupSettings()
    sides = pipelines(defaults)
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"commit: {commit()}")
    print(f"machine: {describe('numpy', 'datasketch', 'datatrove', 'xxhash')}; every side in this process, "
          "1 thread, sides taking turns; docs/s/core = docs / CPU seconds, best of --repeat")
    print(f"tunegate defaults: {defaults.model_dump(exclude={'exact', 'near', 'bands', 'rows'})}, "
          f"banding {defaults.banding()}")
    print(TEXT_DEDUP)
    rows, totals = [], {name: [0.0, 0, np.zeros(3, dtype=np.int64)] for name, _, _ in sides}
    for name in args.sets:
        planted = build_set(name, args.seed, args.corpora)
        print(f"  {name}: {len(planted.docs)} docs {dict(planted.kinds)}", flush=True)
        best = {side: float("inf") for side, _, _ in sides}
        results = {}
        for _ in range(args.repeat):  # the sides take turns, so a change in the machine's load hits all of them
            for side, fn, _ in sides:
                cpu, _, results[side] = _timed(lambda: fn(planted.docs), 1)
                best[side] = min(best[side], cpu)
        measured = [(side, best[side], np.array(pair_counts(planted.truth, labels(planted.docs, results[side]))))
                    for side, _, labels in sides]
        base_cpu = next(cpu for side, cpu, _ in measured if side.startswith("datasketch"))
        for side, cpu, counts in measured:
            q = scores(*counts)
            totals[side][0] += cpu
            totals[side][1] += len(planted.docs)
            totals[side][2] += counts
            rows.append([name, side, f"{cpu:.3f}", f"{len(planted.docs) / cpu:.0f}", f"{base_cpu / cpu:.2f}x",
                         f"{q['precision']:.4f}", f"{q['recall']:.4f}", f"{q['f1']:.4f}"])
    base_total = totals["datasketch, careful (same settings)"][0]
    for side, (cpu, n, counts) in totals.items():
        q = scores(*counts)
        rows.append(["all sets", side, f"{cpu:.3f}", f"{n / cpu:.0f}", f"{base_total / cpu:.2f}x",
                     f"{q['precision']:.4f}", f"{q['recall']:.4f}", f"{q['f1']:.4f}"])
    print()
    print(table(["set", "pipeline", "CPU s", "docs/s/core", "vs datasketch", "P", "R", "F1"], rows))
    check = build_set("wiki-short", args.seed, args.corpora)
    errors = estimator_error(check, defaults)
    print("\nestimated - true word-shingle Jaccard on wiki-short's planted near pairs (mean, std): "
          + "; ".join(f"{k} {m:+.4f} {s:.4f}" for k, (m, s) in errors.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
