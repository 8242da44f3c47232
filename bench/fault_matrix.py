"""Fault matrix: `tunegate run` SIGKILLed (its whole process group, as a power cut or the OOM killer would) at each
failpoint (tasks/core/failpoints.py: stage boundaries, inside ingest, PII, training, evaluation and registration),
then `tunegate run --resume`; every case must end as an uninterrupted run does.

    nice -n 19 .venv/bin/python bench/fault_matrix.py                      # every point (~20 minutes)
    nice -n 19 .venv/bin/python bench/fault_matrix.py --points register:created after:train

The pipeline is bench/tiny_runs.py's (configs/tiny.yaml, tinier) on examples/corpus, one state folder per case,
one Prefect server for all. Per case, printed: whether the kill came at the point, the half-written snapshots
left published (must be none: only unpublished temporary folders may remain), the resumed run's exit code and
status, and against the uninterrupted run: the registry (versions, their status, aliases, run tags: one version,
no duplicate), the snapshot fingerprints of every stage, the training losses, and the seconds. Exit 1 on any
mismatch.
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
POINTS = ["ingest:shard", "after:ingest", "after:contract_raw", "after:clean", "after:dedup", "pii:shard", "after:pii",
          "after:contract", "after:tokenizer_and_model", "after:split", "train:checkpoint", "after:train",
          "evaluate:base", "evaluate:candidate", "after:evaluate", "register:logged", "register:created",
          "register:promote", "after:register"]
RUN_ID = "case"

from tiny_runs import prefect_server, write_config  # noqa: E402


def outcome(home: Path) -> dict:
    """What a finished run left: the registry, the snapshot fingerprints, the losses, the status."""
    import mlflow

    report = json.loads((home / "runs" / RUN_ID / "report.json").read_text())
    uri = f"sqlite:///{home / 'mlflow.db'}"
    c = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = report["model"]["name"] if report.get("model") else "tunegate-tiny"
    versions = sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    registry = [(str(v.version), (v.tags or {}).get("status"), sorted(c.get_model_version(name, v.version).aliases),
                 (v.tags or {}).get("tunegate.run_id")) for v in versions]
    metrics = home / "runs" / RUN_ID / "train" / "metrics.jsonl"
    losses = {m["step"]: m["loss"] for m in map(json.loads, metrics.read_text().splitlines())} if metrics.exists() else {}
    return {"status": report["status"], "registry": registry, "losses": losses,
            "snapshots": {k: v["fingerprint"] for k, v in (report.get("snapshots") or {}).items()}}


def half_snapshots(home: Path) -> list[str]:
    """Published snapshot folders (not temporary) without a manifest or with a shard missing."""
    bad = []
    for folder in (home / "snapshots").glob("*/*"):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            bad.append(str(folder))
            continue
        shards = json.loads(manifest.read_text()).get("shards", [])
        if any(not (folder / s["file"]).is_file() for s in shards):
            bad.append(str(folder))
    return bad


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def tunegate(args: list[str], env: dict, log: Path) -> subprocess.CompletedProcess:
    with open(log, "ab") as out:
        return subprocess.run([str(TUNEGATE), *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True, timeout=1800)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", nargs="*", default=POINTS)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tunegate-faults-"))
    config = write_config(tmp, ROOT / "examples" / "corpus")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_HOME", "TUNEGATE_DASK_ADDRESS", "TUNEGATE_FAILPOINT"):
        env.pop(key, None)
    server, env["PREFECT_API_URL"] = prefect_server(tmp, env)
    failures = 0
    try:
        t0 = time.perf_counter()
        ref_home = tmp / "reference"
        ref = tunegate(["run", "--config", str(config), "--run-id", RUN_ID], {**env, "TUNEGATE_HOME": str(ref_home)},
                       tmp / "reference.log")
        reference = outcome(ref_home)
        print(f"reference: rc {ref.returncode}, {reference['status']}, registry {reference['registry']}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        print(f"{'point':<19} {'killed':<7} {'half':<5} {'rc':<3} {'status':<9} {'registry':<9} {'snapshots':<9} "
              f"{'losses':<7} seconds")
        for point in args.points:
            home, log = tmp / point.replace(":", "-"), tmp / f"{point.replace(':', '-')}.log"
            case_env = {**env, "TUNEGATE_HOME": str(home)}
            t0 = time.perf_counter()
            hits = tmp / f"{point.replace(':', '-')}.hit"
            killed = tunegate(["run", "--config", str(config), "--run-id", RUN_ID],
                              {**case_env, "TUNEGATE_FAILPOINT": point, "TUNEGATE_FAILPOINT_LOG": str(hits)}, log)
            hit = killed.returncode == -9 and f"failpoint {point}: SIGKILL" in _text(hits)
            half = half_snapshots(home)
            resumed = tunegate(["run", "--resume", RUN_ID], case_env, log)
            got = outcome(home)
            same = {k: got[k] == reference[k] for k in ("registry", "snapshots")}
            diff = max((abs(got["losses"][s] - reference["losses"][s]) for s in reference["losses"]), default=0.0) \
                if set(got["losses"]) == set(reference["losses"]) else float("inf")
            ok = hit and not half and got["status"] == reference["status"] and all(same.values()) and diff <= 1e-6
            failures += not ok
            print(f"{point:<19} {'yes' if hit else 'NO':<7} {len(half):<5} {resumed.returncode:<3} {got['status']:<9} "
                  f"{'same' if same['registry'] else 'DIFFERS':<9} {'same' if same['snapshots'] else 'DIFFERS':<9} "
                  f"{diff:<7.1e} {time.perf_counter() - t0:.0f}{'' if ok else '   <- FAIL, log ' + str(log)}", flush=True)
            if not ok:
                print(f"    got registry {got['registry']} snapshots {got['snapshots']}")
            else:
                shutil.rmtree(home, ignore_errors=True)
        print(f"\nFIGURE fault matrix: {len(args.points) - failures}/{len(args.points)} points end as the "
              "uninterrupted run (registry, snapshots, losses, status)")
        return 1 if failures else 0
    finally:
        server.terminate()
        server.wait(timeout=30)
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
