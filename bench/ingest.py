"""Ingest benchmark: files/s per format, and what was ingested or quarantined (and why).

Reads ../shared/eval/documents where it lies (Unstructured's example documents and py-pdf's sample PDFs:
real files in ~20 formats, including encrypted, scanned and non-UTF-8 ones) and, with --generated N, a
larger set of N txt/md/html files made from the text corpora in ../shared/eval/corpora (in a temporary
folder). Every file goes through tasks.data.ingest.ingest.ingest_path one by one in this process, so the time of
each file is its own: per format, the first file's time (imports: the first PDF loads torch, the first
text file spaCy) is shown apart from the warm rate.

With --snapshot the same inputs also go through ingest_to_snapshot (Dask, Parquet shards, the way a run
ingests), and its end-to-end rate is printed.

    .venv/bin/python bench/ingest.py [--generated 2000] [--snapshot] [--docs PATH]
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402

from tasks.core.offline import apply_offline_environment  # noqa: E402

apply_offline_environment()
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

SHARED_EVAL = ROOT.parent / "shared" / "eval"


def generate(folder: Path, n: int, seed: int = 0) -> Path:
    """n txt/md/html files (a third each) of 300-3000 characters from the shared text corpora."""
    rng = random.Random(seed)
    lines = []
    for src in (SHARED_EVAL / "corpora/tinyshakespeare/input.txt", SHARED_EVAL / "corpora/wikitext-2-raw/wiki.test.raw"):
        if src.is_file():
            lines += [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines() if len(ln.strip()) > 30]
    if not lines:
        lines = [f"Sentence number {i} of the generated benchmark text, long enough to read." for i in range(500)]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        paras = []
        while sum(map(len, paras)) < rng.randint(300, 3000):
            start = rng.randrange(len(lines))
            paras.append(" ".join(lines[start : start + rng.randint(1, 6)]))
        kind = ("txt", "md", "html")[i % 3]
        if kind == "txt":
            body = "\n\n".join(paras)
        elif kind == "md":
            body = f"# Generated note {i}\n\n" + "\n\n".join(paras)
        else:
            body = (f"<html><head><title>Generated page {i}</title></head><body><h1>Page {i}</h1>"
                    + "".join(f"<p>{p.replace('<', '&lt;')}</p>" for p in paras) + "</body></html>")
        (folder / f"gen-{i:06d}.{kind}").write_text(body, encoding="utf-8")
    return folder


def fmt_of(path: Path) -> str:
    if path.is_dir():
        return "(dataset folder)"
    return path.suffix.lower() or "(none)"


def run(paths: list[Path]):
    from tasks.data.ingest.ingest import IngestSettings, discover, ingest_path

    settings = IngestSettings()
    per = defaultdict(lambda: {"files": 0, "ingested": 0, "quarantined": 0, "first": None, "warm": 0.0,
                               "bytes": 0})
    reasons: Counter = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    details: dict[str, str] = {}
    for path, source, root in discover(paths, settings):
        f = per[fmt_of(path)]
        t = time.perf_counter()
        items = list(ingest_path(path, source, root, settings))
        dt = time.perf_counter() - t
        if f["first"] is None:
            f["first"] = dt
        else:
            f["warm"] += dt
        f["files"] += 1
        try:
            f["bytes"] += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
        bad = [i["quarantine"] for i in items if "quarantine" in i]
        if len(bad) == len(items):
            f["quarantined"] += 1
        else:
            f["ingested"] += 1
        for q in bad:
            key = f"{q['reason']} ({fmt_of(path)})" if q["reason"] == "unsupported type" else q["reason"]
            reasons[key] += 1
            details.setdefault(key, q["detail"])
            if len(examples[key]) < 3:
                examples[key].append(Path(q["source"]).name)
    return per, reasons, examples, details


def print_tables(title: str, per, reasons, examples, details) -> None:
    print(f"\n## {title}\n")
    print("| format | files | ingested | quarantined | first file ms | warm ms/file | warm files/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total = {"files": 0, "ingested": 0, "quarantined": 0, "time": 0.0}
    for name in sorted(per, key=lambda k: -per[k]["files"]):
        f = per[name]
        warm_n = f["files"] - 1
        warm = f"{1000 * f['warm'] / warm_n:.1f}" if warm_n else "-"
        rate = f"{warm_n / f['warm']:.0f}" if warm_n and f["warm"] > 0 else "-"
        print(f"| {name} | {f['files']} | {f['ingested']} | {f['quarantined']} | {1000 * f['first']:.0f} | "
              f"{warm} | {rate} |")
        total["files"] += f["files"]
        total["ingested"] += f["ingested"]
        total["quarantined"] += f["quarantined"]
        total["time"] += f["first"] + f["warm"]
    print(f"| **all** | {total['files']} | {total['ingested']} | {total['quarantined']} | | | "
          f"{total['files'] / total['time']:.1f} (incl. first files) |")
    if not reasons:
        print("\nnothing quarantined")
        return
    print("\n| quarantined because | files | e.g. | first detail |")
    print("|---|---:|---|---|")
    for key, n in reasons.most_common():
        detail = details[key][:110].replace("|", "/")
        print(f"| {key} | {n} | {', '.join(examples[key])} | {detail} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=Path, default=SHARED_EVAL / "documents", help="documents folder")
    ap.add_argument("--generated", type=int, default=0, help="also ingest N generated txt/md/html files")
    ap.add_argument("--snapshot", action="store_true", help="also time ingest_to_snapshot (Dask) end to end")
    args = ap.parse_args()

    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print("machine:", describe("unstructured", "pdfminer.six", "charset-normalizer"))
    t0 = time.perf_counter()
    import tasks.data.ingest.ingest  # noqa: F401  (prefect, pydantic)

    print(f"import tasks.data.ingest.ingest: {time.perf_counter() - t0:.1f} s")
    inputs = []
    if args.docs.is_dir():
        inputs.append(("documents", args.docs))
        print_tables(f"{args.docs}", *run([args.docs]))
    else:
        print(f"(no documents folder at {args.docs})")
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-") as tmp:
        if args.generated:
            gen = generate(Path(tmp) / "generated", args.generated)
            inputs.append(("generated", gen))
            print_tables(f"{args.generated} generated txt/md/html files", *run([gen]))
        if args.snapshot:
            from tasks.core.executor import DaskSettings
            from tasks.data.ingest.ingest import IngestSettings, ingest_to_snapshot

            dask = DaskSettings()
            print(f"\n## ingest_to_snapshot (Dask {dask.scheduler}, {dask.workers} workers)\n")
            for label, path in inputs:
                t = time.perf_counter()
                ref = ingest_to_snapshot([path], IngestSettings(), dask, Path(tmp) / f"store-{label}")
                dt = time.perf_counter() - t
                s = ref.manifest()["stats"]
                print(f"- {label}: {s['inputs']} inputs -> {s['documents']} documents, {s['quarantined']} quarantined "
                      f"in {dt:.1f} s ({s['inputs'] / dt:.1f} files/s, cluster start-up included)")
            from tasks.core.executor import close_clients

            close_clients()


if __name__ == "__main__":
    main()
