"""Soak: consecutive `tunegate run`s on one state folder, new data dropped in before some of them, `tunegate gc`
after each; the registry, snapshots and checkpoints must stay consistent and the state folder's size bounded.

    nice -n 19 .venv/bin/python bench/soak.py                  # 20 runs, a drop before every 3rd (~20 minutes)
    nice -n 19 .venv/bin/python bench/soak.py --runs 6 --every 2

The pipeline is configs/tiny.yaml with a tinier model (hidden 64, 2 layers, 10 steps) and data.history cumulative
(the default), on examples/corpus plus drops of 40 WikiText-2 paragraphs (../shared/eval, written by others), each
drop a new JSONL file in the data folder. One Prefect server serves every run (as a team's would). Retention:
keep_runs 3, keep_versions 3. Printed per run: status, seconds, state size before and after gc, the registry's size;
then the checks, each PASS or FAIL (exit 1 on any FAIL):
- every registering run registered once: its version is in the registry or was deleted by gc (its MLflow run tagged
  tunegate.gc); no run registered twice;
- the registry keeps at most 2 x keep_versions + keep_runs + 2 versions (newest, last champions, the kept runs',
  the aliases) and its models' artifacts stay within that many copies of the first model (gc deletes the rest);
- the champion's training snapshot is stored, and every kept version's;
- every drop run after the first merged the champion's training data (gc never broke the history chain);
- no temporary snapshot folder left; checkpoints only in the newest keep_runs run folders;
- the state folder after gc, without the registry's own store (mlflow.db, mlartifacts/) and the older runs' reports,
  logs and plots (gc keeps both), stays within 1.5x its size at run keep_runs+1 plus 4x what the drops added; the
  growth of the older runs' reports and of the registry's database and run artifacts is printed.
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
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
TUNEGATE = Path(sys.executable).with_name("tunegate")
KEEP_RUNS, KEEP_VERSIONS = 3, 3

import drift_sets  # noqa: E402
from tiny_runs import du, prefect_server, write_config  # noqa: E402


def check(results: list[tuple[str, bool, str]], name: str, ok: bool, detail: str = "") -> None:
    results.append((name, ok, detail))


def registry_bytes(home: Path) -> int:
    """The registry's own store (its database and artifacts: models, run reports); gc deletes versions from it."""
    db = home / "mlflow.db"
    return (db.stat().st_size if db.exists() else 0) + (du(home / "mlartifacts") if (home / "mlartifacts").exists() else 0)


def model_bytes(home: Path) -> int:
    """The registered versions' model copies (base, adapter, tokenizer): the logged models' artifacts."""
    return sum(du(p) for p in [*(home / "mlartifacts").glob("models"), *(home / "mlartifacts").glob("*/models")])


def old_runs_bytes(home: Path) -> int:
    """What the run folders beyond the newest KEEP_RUNS still hold after gc: reports, configs, logs, plots (kept)."""
    from tasks.registry.state_gc import runs_newest_first
    from tasks.core.state import StatePaths

    return sum(du(run) for run in runs_newest_first(StatePaths.from_env(home))[KEEP_RUNS:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--every", type=int, default=3, help="a drop before every N-th run (from the 2nd)")
    ap.add_argument("--drop", type=int, default=40, help="documents per drop")
    args = ap.parse_args()
    if drift_sets.missing():
        raise SystemExit(f"needs ../shared/eval: missing {drift_sets.missing()}")
    paragraphs = drift_sets.wikitext()
    tmp = Path(tempfile.mkdtemp(prefix="tunegate-soak-"))
    data, home = tmp / "data", tmp / "state"
    shutil.copytree(ROOT / "examples" / "corpus", data)
    config = write_config(tmp, data, retention={"keep_runs": KEEP_RUNS, "keep_versions": KEEP_VERSIONS,
                                                "keep_train_cache": 3, "keep_eval_cache": 50})
    env = {**os.environ, "TUNEGATE_HOME": str(home), "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_HOME", "TUNEGATE_DASK_ADDRESS"):
        env.pop(key, None)
    server, env["PREFECT_API_URL"] = prefect_server(tmp, env)
    rows, drops_added = [], 0
    try:
        for i in range(1, args.runs + 1):
            dropped = i > 1 and i % args.every == 0
            if dropped:
                start = (i // args.every - 1) * args.drop
                lines = [json.dumps({"text": t, "id": f"drop{i}-{n}"}) for n, t in enumerate(paragraphs[start:start + args.drop])]
                (data / f"drop-{i:02d}.jsonl").write_text("\n".join(lines) + "\n")
                drops_added += du(data / f"drop-{i:02d}.jsonl")
            t0 = time.perf_counter()
            proc = subprocess.run([str(TUNEGATE), "run", "--config", str(config), "--run-id", f"soak-{i:02d}"],
                                  cwd=ROOT, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            report = json.loads((home / "runs" / f"soak-{i:02d}" / "report.json").read_text())
            before = du(home) - registry_bytes(home)
            g = subprocess.run([str(TUNEGATE), "gc", "--config", str(config)], cwd=ROOT, env=env, capture_output=True,
                               text=True)
            after, registry, models = du(home) - registry_bytes(home), registry_bytes(home), model_bytes(home)
            kept_reports = old_runs_bytes(home)
            if g.returncode != 0:
                print(g.stdout, g.stderr)
            rows.append({"run": i, "drop": dropped, "rc": proc.returncode, "status": report["status"],
                         "merged": bool((report.get("history") or {}).get("merged")), "seconds": seconds,
                         "before": before, "after": after, "registry": registry, "models": models,
                         "old_runs": kept_reports,
                         "gc_rc": g.returncode,
                         "drops_bytes": drops_added,
                         "gc": " ".join(g.stdout.split()[-6:]) if g.stdout else ""})
            r = rows[-1]
            print(f"run {i:2d} {'drop' if dropped else '    '} rc {r['rc']} {r['status']:<9} {seconds:6.1f} s  "
                  f"state {before / 2**20:6.1f} MiB -> gc -> {after / 2**20:6.1f} MiB (older runs' reports "
                  f"{kept_reports / 2**20:4.1f}), registry {registry / 2**20:5.1f} MiB (models {models / 2**20:5.1f})  "
                  f"merged={r['merged']}", flush=True)
        results: list[tuple[str, bool, str]] = []
        import mlflow

        from tasks.core.state import StatePaths
        from tasks.drift.reference import find_snapshot

        uri = f"sqlite:///{home / 'mlflow.db'}"
        c = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        name = "tunegate-tiny"
        versions = c.search_model_versions(f"name='{name}'")
        run_tags = [(v.tags or {}).get("tunegate.run_id") for v in versions]
        experiment = c.get_experiment_by_name("tunegate").experiment_id
        deleted = [r.data.tags.get("tunegate.run_id") for r in c.search_runs([experiment], "tags.`tunegate.gc` != ''")]
        registered = [r for r in rows if r["status"] in ("promoted", "blocked")]
        check(results, "every registering run registered once (kept, or deleted by gc)",
              sorted(run_tags + deleted) == sorted(f"soak-{r['run']:02d}" for r in registered),
              f"{len(versions)} versions kept, {len(deleted)} deleted by gc, {len(registered)} registering runs")
        most = 2 * KEEP_VERSIONS + KEEP_RUNS + 2
        first_model = next(r["models"] for r in rows if r["models"])
        check(results, f"the registry keeps at most {most} versions and as many model copies",
              len(versions) <= most and max(r["models"] for r in rows) <= most * first_model * 1.05,
              f"{len(versions)} versions; models' artifacts at most {max(r['models'] for r in rows) / 2**20:.1f} MiB, "
              f"{first_model / 2**20:.2f} MiB per copy")
        champion = c.get_model_version_by_alias(name, "champion")
        state = StatePaths.from_env(home)
        check(results, "the champion's training snapshot is stored",
              find_snapshot(state.snapshots, champion.tags["snapshot_fingerprint"]) is not None, f"v{champion.version}")
        unaccounted = [v.version for v in versions
                       if find_snapshot(state.snapshots, (v.tags or {}).get("snapshot_fingerprint", "")) is None]
        check(results, "every kept version's training snapshot stored", not unaccounted, f"{unaccounted}")
        drop_runs = [r for r in rows if r["drop"]]
        check(results, "every drop run after the first merged the champion's data",
              all(r["merged"] for r in drop_runs[1:]), f"{[(r['run'], r['merged']) for r in drop_runs]}")
        temps = [str(p) for p in state.snapshots.glob("*/.*")]
        check(results, "no temporary snapshot folder left", not temps, f"{temps[:3]}")
        with_ckpt = sorted(p.parent.parent.name for p in state.runs.glob("*/train/checkpoints"))
        check(results, f"checkpoints only in the newest {KEEP_RUNS} runs", len(with_ckpt) <= KEEP_RUNS, f"{with_ckpt}")
        base = rows[KEEP_RUNS]
        bound = 1.5 * (base["after"] - base["old_runs"]) + (rows[-1]["drops_bytes"] - base["drops_bytes"]) * 4
        governed = max(r["after"] - r["old_runs"] for r in rows[KEEP_RUNS:])
        check(results, "state size after gc bounded (older runs' reports apart)", governed <= bound,
              f"max {governed / 2**20:.1f} MiB, bound {bound / 2**20:.1f} MiB")
        per_run = (rows[-1]["old_runs"] - base["old_runs"]) / max(1, len(rows) - KEEP_RUNS - 1)
        removed = sum(r["before"] - r["after"] for r in rows)
        per_run_registry = ((rows[-1]["registry"] - rows[-1]["models"]) - (base["registry"] - base["models"])) / max(
            1, len(rows) - KEEP_RUNS - 1)
        print(f"\nFIGURE {len(rows)} runs ({len(drop_runs)} after drops): {sum(r['seconds'] for r in rows) / 60:.1f} "
              f"minutes; state (without the registry) after the last gc {rows[-1]['after'] / 2**20:.1f} MiB, without gc "
              f"it would be {(rows[-1]['after'] + removed) / 2**20:.1f} MiB; {len(versions)} versions, champion "
              f"v{champion.version}; the registry (mlflow.db, mlartifacts/) {rows[-1]['registry'] / 2**20:.1f} MiB, of "
              f"which models {rows[-1]['models'] / 2**20:.1f} MiB ({len(versions)} kept, {len(deleted)} deleted); its "
              f"database and run artifacts {per_run_registry / 2**20:.2f} MiB more per run; older runs' reports, logs "
              f"and plots (kept) {per_run / 2**20:.2f} MiB more per run")
        for name_, ok, detail in results:
            print(f"{'PASS' if ok else 'FAIL'}  {name_}  ({detail})")
        return 0 if all(ok for _, ok, _ in results) else 1
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
