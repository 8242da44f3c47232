"""Load: a large synthetic corpus through the data stages, with peak memory measured.

Generates N documents (default 200,000, ~1 KB each, 2% planted exact duplicates and 2% near duplicates)
as JSONL files, then runs ingest -> clean -> dedup (-> PII scrub on the first --pii-docs documents) with
the same stage functions the retrain flow uses, on a Dask LocalCluster. A sampler thread records the
resident memory of this process and of every Dask worker (the process tree) every 0.2 s; the figure to
look at is the peak of the largest single process and of the tree as a whole.

    .venv/bin/python bench/load.py                 # 200k documents
    .venv/bin/python bench/load.py --docs 20000    # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import describe  # noqa: E402
import tasks  # noqa: E402,F401  (offline environment)

WORDS = ("river stone bridge market winter harvest lantern council garden archive signal harbor meadow "
         "engine ledger orchard vessel quarry beacon cellar forge tavern chapel mill granary causeway "
         "pasture rampart spire citadel").split()


def synthetic_doc(rng: random.Random, i: int) -> str:
    sentences = []
    for _ in range(rng.randint(10, 16)):
        n = rng.randint(8, 14)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + f" {i % 997}.")
    return " ".join(sentences)


def write_corpus(folder: Path, n_docs: int, per_file: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    recent: list[str] = []
    fh = None
    for i in range(n_docs):
        if i % per_file == 0:
            if fh:
                fh.close()
            fh = open(folder / f"part-{i // per_file:04d}.jsonl", "w")
        roll = rng.random()
        if roll < 0.02 and recent:
            text = rng.choice(recent)  # exact duplicate
        elif roll < 0.04 and recent:
            words = rng.choice(recent).split()
            words.insert(rng.randrange(len(words)), "indeed")  # near duplicate
            text = " ".join(words)
        else:
            text = synthetic_doc(rng, i)
            recent = (recent + [text])[-50:]
        fh.write(json.dumps({"text": text, "n": i}) + "\n")
    if fh:
        fh.close()


class MemorySampler(threading.Thread):
    """Peak RSS of this process, of its largest child, and of the whole tree."""

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        import psutil

        self.proc, self.every, self.stop_flag = psutil.Process(), every, threading.Event()
        self.peak_self = self.peak_child = self.peak_tree = 0

    def run(self) -> None:
        import psutil

        while not self.stop_flag.is_set():
            try:
                me = self.proc.memory_info().rss
                kids = []
                for c in self.proc.children(recursive=True):
                    try:
                        kids.append(c.memory_info().rss)
                    except psutil.Error:
                        pass
                self.peak_self = max(self.peak_self, me)
                self.peak_child = max(self.peak_child, max(kids, default=0))
                self.peak_tree = max(self.peak_tree, me + sum(kids))
            except psutil.Error:
                pass
            time.sleep(self.every)

    def stop(self) -> None:
        self.stop_flag.set()
        self.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--per-file", type=int, default=10_000)
    ap.add_argument("--shard-size", type=int, default=5_000)
    ap.add_argument("--pii-docs", type=int, default=2_000, help="documents scrubbed for PII (0 skips; Presidio is ~100 docs/s/core)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    from tasks.core import snapshot
    from tasks.data.clean import CleanSettings, clean_snapshot
    from tasks.data.dedup.settings import DedupSettings
    from tasks.data.dedup.stage import dedup_snapshot
    from tasks.core.executor import DaskSettings, close_clients
    from tasks.data.ingest.ingest import IngestSettings, ingest_to_snapshot
    from tasks.data.pii.settings import PiiSettings
    from tasks.data.pii.scrub import scrub_snapshot

    work = Path(tempfile.mkdtemp(prefix="tunegate-load-"))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {describe()}; workers {args.workers}")
    t = time.perf_counter()
    write_corpus(work / "raw", args.docs, args.per_file)
    size_mb = sum(f.stat().st_size for f in (work / "raw").iterdir()) / 2**20
    print(f"corpus: {args.docs} documents, {size_mb:.0f} MB of JSONL, written in {time.perf_counter() - t:.1f} s")

    dask = DaskSettings(scheduler="local", workers=args.workers)
    store = work / "store"
    sampler = MemorySampler()
    sampler.start()
    rows = []

    def stage(name, fn):
        t0 = time.perf_counter()
        ref = fn()
        dt = time.perf_counter() - t0
        rows.append((name, ref.rows, dt, ref.rows / dt if dt else 0.0))
        print(f"  {name:<8} {ref.rows:>8} rows  {dt:7.1f} s  {ref.rows / dt:9.0f} docs/s   tree peak so far "
              f"{sampler.peak_tree / 2**30:.2f} GiB", flush=True)
        return ref

    raw = stage("ingest", lambda: ingest_to_snapshot([work / "raw"], IngestSettings(shard_size=args.shard_size), dask, store))
    cleaned = stage("clean", lambda: clean_snapshot(raw, CleanSettings(), dask, store))
    deduped = stage("dedup", lambda: dedup_snapshot(cleaned, DedupSettings(), store))
    if args.pii_docs:
        head = snapshot.write(store, "head", "k", [snapshot.read_table(deduped).slice(0, args.pii_docs)],
                              parent=deduped.fingerprint, params={}, stats={})
        stage("pii", lambda: scrub_snapshot(head, PiiSettings(), dask, store))
    close_clients()
    sampler.stop()
    stats = json.loads((Path(deduped.path) / "manifest.json").read_text())["stats"]
    print(f"dedup removed {stats['exact_duplicates']} exact and {stats['near_duplicates']} near duplicates")
    print(f"peak RSS: this process {sampler.peak_self / 2**30:.2f} GiB, largest worker "
          f"{sampler.peak_child / 2**30:.2f} GiB, whole tree {sampler.peak_tree / 2**30:.2f} GiB "
          f"(corpus on disk {size_mb / 1024:.2f} GiB)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
