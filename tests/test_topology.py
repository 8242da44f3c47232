"""The docker-compose topology without containers: a Prefect server, an MLflow tracking server and a Dask
scheduler with one worker, each a separate process on a loopback port, and one `tunegate run` pointed at all
three through PREFECT_API_URL, MLFLOW_TRACKING_URI and TUNEGATE_DASK_ADDRESS.

Every process is started in its own process group and the whole group is killed when the module ends, even on
failure. State (Prefect home, MLflow database and artifacts, tunegate home) lives under pytest's tmp folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli, tiny_config
from helpers.processes import SERVER_ENV, client, free_port, healthy, start, stop, tail, wait_for

BIN = Path(sys.executable).parent
RUN_ID = "topology"


def scheduler_workers(address: str) -> int:
    from distributed import Client

    try:
        with Client(address, timeout=5, set_as_default=False) as c:
            return len(c.scheduler_info().get("workers", {}))
    except OSError:
        return 0


def completed_on_scheduler(address: str) -> list[str]:
    """Keys of every task the scheduler saw finish (in memory) — from its transition log."""
    from distributed import Client

    def finished(dask_scheduler):
        return sorted({str(entry[0]) for entry in dask_scheduler.transition_log if entry[2] == "memory"})

    with Client(address, timeout=10, set_as_default=False) as c:
        return c.run_on_scheduler(finished)


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    """Prefect server, MLflow server, Dask scheduler + one worker; yields their addresses."""
    tmp = tmp_path_factory.mktemp("topology")
    base = {**os.environ, **SERVER_ENV}
    for key in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "TUNEGATE_DASK_ADDRESS"):
        base.pop(key, None)
    procs: list[tuple[str, object, Path]] = []
    try:
        # (a) Prefect server with its own home
        prefect_home = tmp / "prefect"
        prefect_home.mkdir()
        p_port = free_port()
        log = tmp / "prefect.log"
        proc = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(p_port)],
                     {**base, "PREFECT_HOME": str(prefect_home)}, log, cwd=prefect_home)
        procs.append(("prefect", proc, log))

        # (b) MLflow tracking server: sqlite backend, proxied artifact store
        m_port = free_port()
        log = tmp / "mlflow.log"
        proc = start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(m_port),
                      "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
                      "--artifacts-destination", str(tmp / "mlartifacts"), "--serve-artifacts"], base, log, cwd=tmp)
        procs.append(("mlflow", proc, log))

        # (c) Dask scheduler and one single-threaded worker
        s_port = free_port()
        address = f"tcp://127.0.0.1:{s_port}"
        log = tmp / "dask-scheduler.log"
        proc = start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(s_port), "--no-dashboard"],
                     base, log, cwd=tmp)
        procs.append(("dask-scheduler", proc, log))
        log = tmp / "dask-worker.log"
        proc = start([str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                      "--no-dashboard", "--memory-limit", "4GiB"], base, log, cwd=ROOT)
        procs.append(("dask-worker", proc, log))

        name_proc = {n: (p, lg) for n, p, lg in procs}
        wait_for(lambda: healthy(f"http://127.0.0.1:{p_port}/api/health"), 120, "the Prefect server",
                 *name_proc["prefect"])
        wait_for(lambda: healthy(f"http://127.0.0.1:{m_port}/health"), 120, "the MLflow server", *name_proc["mlflow"])
        wait_for(lambda: scheduler_workers(address) >= 1, 120, "a Dask worker to join the scheduler",
                 *name_proc["dask-worker"], every=1)
        yield {"prefect": f"http://127.0.0.1:{p_port}/api", "mlflow": f"http://127.0.0.1:{m_port}", "dask": address,
               "tmp": tmp, "logs": {n: lg for n, _, lg in procs}}
    finally:
        for _, proc, _ in reversed(procs):
            stop(proc)


@pytest.fixture(scope="module")
def run(topology, extensions_dir):
    tmp = topology["tmp"]
    config = tiny_config()
    config["data"]["paths"] = [str(ROOT / "examples/corpus")]
    config["contract"] = {k: str(ROOT / "data_contracts" / f"{k}.json") for k in ("raw", "curated", "training")}
    config["gates"]["file"] = str(ROOT / "data_contracts/gates-tiny.yaml")
    config["train"].update(max_steps=6, checkpoint_every=3)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    home = tmp / "state"
    # the server's URL goes in both as PREFECT_API_URL and through a Prefect profile, the other way a user
    # points the client at a server
    profiles = tmp / "profiles.toml"
    profiles.write_text(f'active = "topology"\n[profiles.topology]\nPREFECT_API_URL = "{topology["prefect"]}"\n')
    proc = run_cli("run", "--config", str(tmp / "config.yaml"), "--run-id", RUN_ID, home=home, timeout=600,
                   env={**SERVER_ENV, "PREFECT_API_URL": topology["prefect"], "PREFECT_PROFILES_PATH": str(profiles),
                        "MLFLOW_TRACKING_URI": topology["mlflow"], "TUNEGATE_DASK_ADDRESS": topology["dask"]})
    logs = "\n".join(f"--- {n}.log\n{tail(lg, 1500)}" for n, lg in topology["logs"].items())
    assert proc.returncode == 0, (f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
                                  f"{proc.stderr[-3000:]}\n{logs}")
    report = json.loads((home / "runs" / RUN_ID / "report.json").read_text())
    return {**topology, "home": home, "proc": proc, "report": report, "config": config}


def test_run_is_promoted(run):
    assert run["report"]["status"] == "promoted", run["report"].get("blocked_by")


def test_flow_run_completed_on_the_prefect_server(run):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with client(run["prefect"]) as c:
        flow_runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["retrain"])))
    assert flow_runs, "no retrain flow run on the Prefect server"
    assert [r.state.type.value for r in flow_runs] == ["COMPLETED"], [(r.name, r.state) for r in flow_runs]


def test_model_version_registered_on_the_mlflow_server(run):
    import mlflow

    name = run["config"]["registry"]["model_name"]
    c = mlflow.MlflowClient(tracking_uri=run["mlflow"], registry_uri=run["mlflow"])
    version = c.get_model_version_by_alias(name, "champion")
    assert str(version.version) == str(run["report"]["model"]["version"])
    # the run that produced it is on the server too
    assert c.get_run(version.run_id).info.status == "FINISHED"


def test_data_stages_ran_on_the_dask_cluster(run):
    keys = completed_on_scheduler(run["dask"])
    ingest = [k for k in keys if k.startswith("_ingest_batch-")]
    # 49 files in batches of max(1, 49 // (workers * 4)): more than one batch, all on the external cluster
    assert len(ingest) > 1, keys
    assert any(k.startswith("_clean_shard-") for k in keys), keys
