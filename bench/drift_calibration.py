"""Drift calibration: how often the drift tests call a drop of the reference's own kind drifted (false alarms)
and how often they catch a drop of another kind (detections), on corpora written by others.

    nice -n 19 .venv/bin/python bench/drift_calibration.py            # 3 references x 4 kinds (~10 minutes)
    nice -n 19 .venv/bin/python bench/drift_calibration.py --same 100 --other 20 --references wikitext

For each reference kind (bench/drift_sets.py): a seeded shuffle, the first ``--reference`` documents are the
reference (what the champion was trained on), the rest is held out. ``--same`` drops are drawn from the held-out
documents (new documents of the same kind: every alarm is a false alarm) and ``--other`` drops from each other
kind (every miss is a miss), with sizes cycling through ``--sizes``. Each drop goes through the product's
comparison (``tasks.drift.measure.side_of_texts`` + ``tasks.data.drift_stats.compare``) with the thresholds of
data_contracts/drift.yaml, a byte-level BPE trained on the reference (vocab 4096, as the pipeline trains one
without a base model) and the default PII settings. Prints alarms per (reference, kind, size) and per test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import drift_sets  # noqa: E402
from tasks.data import drift_stats  # noqa: E402
from tasks.data.pii.settings import PiiSettings  # noqa: E402
from tasks.drift.measure import TokenizerView, side_of_texts  # noqa: E402
from tasks.train.tokenizer import bpe_tokenizer  # noqa: E402


def reference_tokenizer(texts: list[str], folder: Path) -> TokenizerView:
    bpe_tokenizer(texts, 4096).save_pretrained(str(folder))
    return TokenizerView(str(folder))


def run(reference_kind: str, corpora: dict[str, list[str]], args, t, pii, out: Path) -> list[dict]:
    docs = corpora[reference_kind]
    reference, held_out = drift_sets.split(docs, min(args.reference, int(0.7 * len(docs))), args.seed)
    tok = reference_tokenizer(reference, out / reference_kind)
    ref_side = side_of_texts(reference, tok, pii, t)
    rows = []
    plans = [("same", reference_kind, drift_sets.drops(held_out, args.same, args.sizes, args.seed + 1))]
    for k, kind in enumerate(k for k in corpora if k != reference_kind):
        plans.append(("other", kind, drift_sets.drops(corpora[kind], args.other, args.sizes, args.seed + 2 + k)))
    for role, kind, kind_drops in plans:
        for drop in kind_drops:
            t0 = time.perf_counter()
            result = drift_stats.compare(ref_side, side_of_texts(drop, tok, pii, t), t, duplicate=0.0)
            rows.append({"reference": reference_kind, "role": role, "kind": kind, "size": len(drop),
                         "drift": result.drift, "decision": result.decision, "seconds": time.perf_counter() - t0,
                         "fired": [c.name for c in result.checks if c.drifted]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--references", nargs="+", default=["wikitext", "instructions", "shakespeare"])
    ap.add_argument("--reference", type=int, default=1000, help="reference documents (default 1,000; at most 70%% of the kind's)")
    ap.add_argument("--same", type=int, default=100, help="drops of the reference's kind per reference")
    ap.add_argument("--other", type=int, default=20, help="drops of each other kind per reference")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 12, 20, 40, 80])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if drift_sets.missing():
        print("missing data: " + ", ".join(drift_sets.missing()))
        return 2
    t, pii = drift_stats.load_thresholds(), PiiSettings()
    corpora = {k: load() for k, load in drift_sets.KINDS.items()}
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "tasks/data", "tasks/drift", "data_contracts",
                            "bench/drift_calibration.py", "bench/drift_sets.py"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    print("Drift calibration")
    print(f"command: {' '.join(['.venv/bin/python', 'bench/drift_calibration.py', *sys.argv[1:]])}")
    print(f"commit: {git.strip()}{' (uncommitted changes)' if dirty else ''}")
    print(f"thresholds: false_alarm_rate {t.false_alarm_rate}, resamples {t.resamples}, min_documents "
          f"{t.min_documents}, floors: length_ks {t.length_ks}, token_js {t.token_js}, unseen_words "
          f"{t.unseen_words}, pii_structured_change {t.pii_structured_change}, pii_named_change "
          f"{t.pii_named_change}")
    print("documents per kind: " + ", ".join(f"{k} {len(v)}" for k, v in corpora.items()))
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for reference_kind in args.references:
            rows += run(reference_kind, corpora, args, t, pii, Path(tmp))
    print()
    print("| reference | drops of | role | " + " | ".join(f"n={s}" for s in args.sizes) + " | all | tests that fired |")
    print("|---|---|---|" + "---:|" * (len(args.sizes) + 1) + "---|")
    groups = defaultdict(list)
    for r in rows:
        groups[(r["reference"], r["kind"], r["role"])].append(r)
    for (ref, kind, role), rs in groups.items():
        cells = []
        for size in args.sizes:
            some = [r for r in rs if r["size"] == size]
            cells.append(f"{sum(r['drift'] for r in some)}/{len(some)}" if some else "-")
        fired = Counter(n for r in rs for n in r["fired"])
        print(f"| {ref} | {kind} | {'false alarms' if role == 'same' else 'detections'} | " + " | ".join(cells)
              + f" | **{sum(r['drift'] for r in rs)}/{len(rs)}** | "
              + (", ".join(f"{n} {c}" for n, c in fired.most_common()) or "-") + " |")
    same = [r for r in rows if r["role"] == "same"]
    other = [r for r in rows if r["role"] == "other"]
    print()
    print(f"false alarms: {sum(r['drift'] for r in same)}/{len(same)}; detections: {sum(r['drift'] for r in other)}"
          f"/{len(other)}; mean seconds per drop {sum(r['seconds'] for r in rows) / len(rows):.2f}; "
          f"elapsed {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
