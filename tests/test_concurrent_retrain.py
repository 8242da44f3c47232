"""Load and concurrency: two retrains at once on one state folder, and the state folder's lock.

Scale is bench/load.py's job (200k documents through the data stages, bench/RESULTS.md); the Prefect
deployment's concurrency limit (a second retrain waits for the slot) is tests/test_operations.py. Here: two
plain `tunegate run` processes started together on one state folder, with no server (the ephemeral Prefect
API and the MLflow SQLite store are shared files), must both finish, share the data snapshots they both
computed, and leave the registry consistent (one version each, @champion on one of them, the other in the
champion history). And the lock that serialises registration and promotion between such runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TUNEGATE
from helpers.small_runs import SLOW_START, tiny_config

HOLD = """
import sys, time
from pathlib import Path
from tasks.core.state import StatePaths
with StatePaths(Path(sys.argv[1])).lock("registry") as waited:
    print(f"holding {waited:.3f}", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def holder(home: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(home), str(seconds)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)


def test_lock_makes_holders_take_turns_and_a_killed_holder_releases_it(tmp_path):
    from tasks.core.state import StatePaths

    state = StatePaths(tmp_path)
    a = holder(tmp_path, 1.5)
    assert a.stdout.readline().startswith("holding")
    b = holder(tmp_path, 0.1)  # waits for a
    a.wait(timeout=30)
    b.wait(timeout=30)
    holds = state.lock_holds("registry")
    assert [h["pid"] for h in holds] == [a.pid, b.pid]
    assert holds[0]["released"] <= holds[1]["acquired"]
    # a holder killed with SIGKILL cannot release it itself: the kernel does
    c = holder(tmp_path, 60)
    assert c.stdout.readline().startswith("holding")
    c.send_signal(signal.SIGKILL)
    c.wait()
    t0 = time.monotonic()
    with state.lock("registry", timeout_s=10) as waited:
        assert waited < 5
    assert time.monotonic() - t0 < 5
    # a lock that stays held fails after the timeout, naming the lock file and the holder's pid
    d = holder(tmp_path, 30)
    try:
        assert d.stdout.readline().startswith("holding")
        with pytest.raises(TimeoutError, match=rf"registry\.lock is held by another run \(pid {d.pid}\)"):
            with state.lock("registry", timeout_s=0.5):
                pass
    finally:
        d.kill()
        d.wait()


def test_same_snapshot_written_by_racing_writers(tmp_path):
    """Writers of one cache key that reach the rename together all succeed; one copy is kept, no temp left.
    The same for snapshot.publish, which tokenizer and base-model folders use."""
    import threading

    import pyarrow as pa

    from tasks.core import snapshot

    n = 4
    barrier = threading.Barrier(n)
    results, errors = [], []

    def tables():
        yield pa.table({"doc_id": ["a", "b"], "text": ["x", "y"]})
        barrier.wait(timeout=30)  # everyone renames at once

    def writer():
        try:
            results.append(snapshot.write(tmp_path, "pii", "key", tables(), parent=None, params={}, stats={}))
        except Exception as exc:
            errors.append(exc)

    def publisher():
        def build(tmp):
            tmp.mkdir()
            (tmp / "tokenizer.json").write_text("{}")
            barrier.wait(timeout=30)

        try:
            results.append(snapshot.publish(tmp_path / "tokenizers" / "key", build))
        except Exception as exc:
            errors.append(exc)

    for target in (writer, publisher):
        threads = [threading.Thread(target=target) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        barrier.reset()
    assert errors == []
    refs, published = results[:n], results[n:]
    assert len({r.fingerprint for r in refs}) == 1 and all(r.path == refs[0].path for r in refs)
    assert sorted(published) == [False] * (n - 1) + [True]
    assert sorted(p.name for p in (tmp_path / "pii").iterdir()) == ["key"]
    assert sorted(p.name for p in (tmp_path / "tokenizers").iterdir()) == ["key"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, extensions_dir):
    """Two `tunegate run` processes started together on one state folder, same data and config."""
    tmp = tmp_path_factory.mktemp("concurrent")
    home = tmp / "state"
    config = tiny_config(tmp, [ROOT / "examples" / "corpus"])
    env = {**os.environ, **SLOW_START, "TUNEGATE_HOME": str(home)}
    for key in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TUNEGATE_DASK_ADDRESS"):
        env.pop(key, None)
    procs = {rid: subprocess.Popen([str(TUNEGATE), "run", "--config", str(config), "--run-id", rid], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
             for rid in ("first", "second")}
    out = {}
    try:
        for rid, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=1500)
            out[rid] = {"rc": proc.returncode, "stdout": stdout, "stderr": stderr}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for rid in out:
        path = home / "runs" / rid / "report.json"
        out[rid]["report"] = json.loads(path.read_text()) if path.is_file() else None
    return {"home": home, "config": config, "runs": out}


def _explain(two_runs) -> str:
    return "\n".join(f"--- {rid} exit {r['rc']}\n{r['stdout'][-1500:]}\n{r['stderr'][-3000:]}"
                     for rid, r in two_runs["runs"].items())


def test_neither_concurrent_run_is_lost(two_runs):
    for rid, r in two_runs["runs"].items():
        assert r["rc"] in (0, 3) and r["report"] and r["report"]["status"] in ("promoted", "blocked"), _explain(two_runs)


def test_concurrent_runs_share_one_snapshot_per_stage(two_runs):
    from tasks.core import snapshot

    store = two_runs["home"] / "snapshots"
    reports = [r["report"] for r in two_runs["runs"].values()]
    for stage in ("ingest", "clean", "dedup", "pii"):
        keys = [p for p in (store / stage).iterdir()]
        assert [p for p in keys if p.name.startswith(".")] == [], f"temp folders left in {stage}: {keys}"
        assert len(keys) == 1 and snapshot.is_snapshot(keys[0]), keys
        assert len({r["snapshots"][stage]["fingerprint"] for r in reports}) == 1


def test_registry_is_consistent_after_concurrent_promotions(two_runs):
    import mlflow

    from tasks.registry.versions import HISTORY_TAG, RUN_TAG

    uri = f"sqlite:///{two_runs['home'] / 'mlflow.db'}"
    c = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    reports = {rid: r["report"] for rid, r in two_runs["runs"].items()}
    name = reports["first"]["model"]["name"]
    versions = {v.tags[RUN_TAG]: str(v.version) for v in c.search_model_versions(f"name='{name}'")}
    assert versions == {rid: rep["model"]["version"] for rid, rep in reports.items()}  # one version per run
    champion = str(c.get_model_version_by_alias(name, "champion").version)
    promoted = [versions[rid] for rid, rep in reports.items() if rep["status"] == "promoted"]
    assert champion in promoted
    history = json.loads(c.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))
    # every promotion is remembered: the champion it replaced is in the history, so rollback finds it
    assert sorted(history + [champion]) == sorted(promoted), (history, champion, promoted)
    print(f"\nFIGURE concurrent: versions {versions}, promoted {promoted}, @champion v{champion}, history {history}")
