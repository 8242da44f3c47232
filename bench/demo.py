"""Where `make demo`'s time goes: the default run, cold after install, then again on unchanged data.

Cold after install = a fresh state folder holding only what `make install` leaves there (the dequantized
base model, `tunegate prepare`): no snapshots, no compiled ops, no evaluation cache, an empty registry. The
script times `tunegate run` (configs/demo.yaml) as a user starts it, then a second `tunegate run` on the same
data, and prints each run's wall time, its stages, the training launch (process start, imports, model load)
apart from the training loop, and each model's evaluation time; plus the verdict and what decided it.

    .venv/bin/python bench/demo.py [--config configs/demo.yaml] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUNEGATE = Path(sys.executable).with_name("tunegate")


def run(home: Path, config: Path, run_id: str) -> tuple[float, dict, int]:
    env = {**os.environ, "TUNEGATE_HOME": str(home)}
    for leaked in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(leaked, None)
    t0 = time.perf_counter()
    proc = subprocess.run([str(TUNEGATE), "run", "--config", str(config), "--run-id", run_id], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    report = json.loads((home / "runs" / run_id / "report.json").read_text())
    return wall, report, proc.returncode


def breakdown(wall: float, report: dict) -> list[tuple[str, float]]:
    stages = dict(report.get("stage_seconds") or {})
    rows = [("total (tunegate run, wall)", wall)]
    rows.append(("  start: imports, Prefect API, flow start", wall - sum(stages.values())))
    for name, seconds in stages.items():
        rows.append((f"  {name}", seconds))
        if name == "train" and report.get("training"):
            loop = report["training"]["wall_s"]
            rows.append(("    launch: process, DeepSpeed, model load", seconds - loop))
            rows.append((f"    loop: {report['training']['steps']} steps at "
                         f"{report['training']['mean_tokens_per_s']:.0f} tokens/s", loop))
        if name == "evaluate":
            for who, s in (report.get("evaluation") or {}).get("seconds", {}).items():
                rows.append((f"    {who}" + (" (from the evaluation cache)" if s == 0 else ""), s))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs/demo.yaml")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tunegate-bench-demo-") as tmp:
        home = Path(tmp) / "state"
        env = {**os.environ, "TUNEGATE_HOME": str(home)}
        subprocess.run([str(TUNEGATE), "prepare", "--config", str(args.config)], cwd=ROOT, env=env, check=True,
                       capture_output=True)  # what `make install` leaves in the state folder
        print(f"# {args.config.relative_to(ROOT)}: {args.runs} runs on {os.cpu_count()} cores, cold after install\n")
        for i in range(1, args.runs + 1):
            wall, report, rc = run(home, args.config, f"bench-{i}")
            ev = report.get("evaluation") or {}
            print(f"## run {i}: {report['status']} (exit {rc}), v{(report.get('model') or {}).get('version')}")
            for label, seconds in breakdown(wall, report):
                print(f"{label:<58} {seconds:8.1f} s")
            if ev:
                base, cand = ev.get("base", {}), ev.get("candidate", {})
                d = (ev.get("deltas") or {}).get("base", {}).get("rougeL")
                ci = f" [{d['low']:+.1f}, {d['high']:+.1f}]" if d else ""
                print(f"rougeL base {base.get('rougeL', 0):.1f} -> candidate {cand.get('rougeL', 0):.1f}{ci}; "
                      f"exact match {base.get('exact_match', 0):.1f} -> {cand.get('exact_match', 0):.1f}; "
                      f"bits/byte {base.get('bits_per_byte', 0):.3f} -> {cand.get('bits_per_byte', 0):.3f}")
                if "champion" in ev:
                    print(f"champion v{ev['champion_version']} rougeL {ev['champion'].get('rougeL', 0):.1f}")
            print("decided by: " + ("; ".join(report["blocked_by"]) or "all gates passed") + "\n")
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
