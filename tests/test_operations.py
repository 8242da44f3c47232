"""Operations against a real Prefect server: prefect.yaml, `tunegate deploy`, `tunegate serve` with the drift
trigger, and `tunegate server`.

Every server and serve process is started in its own process group and killed with it, even on failure.
The served retrain that drift starts is cancelled as soon as it is seen: the test is about what starts it
and with which parameters, not about training (tests/test_retrain_e2e.py trains).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import ROOT, TUNEGATE, run_cli, tiny_config
from helpers.drift_data import company_texts, drifted_texts, undrifted_texts, write_jsonl
from helpers.processes import SERVER_ENV, client, free_port, healthy, prefect_server, start, stop, tail, wait_for
from helpers.served import (cancel, client_env, drift_report, retrain_runs_by_automation, run_monitor, stopped,
                            wait_registered)
from helpers.sockets import LOOPBACK, sockets_over

PREFECT_YAML = ROOT / "prefect.yaml"
def _pipeline_sections() -> set[str]:
    from flows.config import PipelineConfig

    return set(PipelineConfig.model_fields)


PIPELINE_SECTIONS = _pipeline_sections()


def tunegate(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(TUNEGATE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def spec(name: str) -> dict:
    return next(d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"] if d["name"] == name)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`prefect server start` on a free port with its own PREFECT_HOME; yields its API URL."""
    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as api_url:
        yield api_url


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """`tunegate serve` against the server, with a small config and a reference path (no champion yet)."""
    tmp = tmp_path_factory.mktemp("served")
    home = tmp / "state"
    config = tiny_config()
    config["data"]["paths"] = [str(ROOT / "examples/corpus")]
    config["contract"] = {k: str(ROOT / "data_contracts" / f"{k}.json") for k in ("raw", "curated", "training")}
    config["gates"]["file"] = str(ROOT / "data_contracts/gates-tiny.yaml")
    config["train"].update(max_steps=4, warmup_steps=1, checkpoint_every=4)
    config["dask"] = {"scheduler": "sync"}
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    reference = write_jsonl(tmp / "reference.jsonl", company_texts())
    log = tmp / "serve.log"
    env = client_env(server, home, PREFECT_RUNNER_POLL_FREQUENCY="1")
    proc = start([str(TUNEGATE), "serve", "--config", str(tmp / "config.yaml"), "--dataset", "corpus",
                  "--reference", str(reference)], env, log)
    try:
        wait_registered(server, proc, log, "reference", str(reference))
        yield {"api": server, "home": home, "tmp": tmp, "reference": reference, "proc": proc, "log": log}
    finally:
        stop(proc)


# ------------------------------------------------------------------------------------------ prefect.yaml


def test_prefect_yaml_declares_scheduled_deployments_and_the_drift_trigger():
    project = yaml.safe_load(PREFECT_YAML.read_text())
    names = {d["name"]: d for d in project["deployments"]}
    assert {"retrain", "drift-monitor"} <= set(names)
    for d in names.values():
        assert d["schedules"] and all(s["cron"] for s in d["schedules"])
    retrain = names["retrain"]
    assert retrain["entrypoint"] == "flows/retrain.py:retrain"
    assert names["drift-monitor"]["entrypoint"] == "flows/drift.py:drift_monitor"
    trigger = retrain["triggers"][0]
    assert "tunegate.data.drift" in trigger["expect"]
    assert trigger["match"] == {"prefect.resource.id": "tunegate.dataset.*"}
    assert trigger["parameters"]["config"]["data"]["paths"] == ["{{ event.payload.new_data }}"]
    # the trigger's config is the schedule's, apart from the data paths
    same = {k: v for k, v in trigger["parameters"]["config"].items() if k != "data"}
    assert same == {k: v for k, v in retrain["parameters"]["config"].items() if k != "data"}
    assert retrain["concurrency_limit"] == {"limit": 2, "collision_strategy": "ENQUEUE"}
    assert {d["work_pool"]["name"] for d in names.values()} == {"tunegate-process"}
    from flows.config import PipelineConfig, load_config, resolve_paths

    # a valid config (the UI form's default), and the demo's: configs/demo.yaml with paths from the checkout
    scheduled = resolve_paths(PipelineConfig.model_validate(retrain["parameters"]["config"]), ROOT)
    assert scheduled.model_dump() == load_config(ROOT / "configs/demo.yaml").model_dump()


def test_deploy_without_api_url_fails_in_one_line(tmp_path):
    (tmp_path / "profiles.toml").write_text('active = "local"\n[profiles.local]\n')
    proc = run_cli("deploy", home=tmp_path / "state", env={"PREFECT_PROFILES_PATH": str(tmp_path / "profiles.toml")})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: PREFECT_API_URL is not set: start a server (`tunegate server`) and "
        "export PREFECT_API_URL=http://127.0.0.1:4200/api"]


# ------------------------------------------------------------------------------------------ deploy


def test_deploy_registers_schedules_parameter_form_trigger_and_limit(server, tmp_path):
    proc = tunegate("deploy", env=client_env(server, tmp_path / "state"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "deployed retrain, drift-monitor" in proc.stdout
    with client(server) as c:
        assert c.read_work_pool("tunegate-process").type == "process"
        retrain = c.read_deployment_by_name("retrain/retrain")
        monitor = c.read_deployment_by_name("drift-monitor/drift-monitor")
        for d, name in ((retrain, "retrain"), (monitor, "drift-monitor")):
            assert d.work_pool_name == "tunegate-process"
            assert [s.schedule.cron for s in d.schedules] == [s["cron"] for s in spec(name)["schedules"]]
            assert all(s.active for s in d.schedules)
            assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
        # the UI renders `config` from the PipelineConfig schema: every section is there
        schema = retrain.parameter_openapi_schema
        assert schema["properties"]["config"]["$ref"].endswith("/PipelineConfig")
        assert set(schema["definitions"]["PipelineConfig"]["properties"]) == PIPELINE_SECTIONS
        assert "TrainSettings" in schema["definitions"] and "max_steps" in schema["definitions"]["TrainSettings"]["properties"]
        assert retrain.parameters["config"]["train"]["max_steps"] == spec("retrain")["parameters"]["config"]["train"]["max_steps"]
        assert set(monitor.parameter_openapi_schema["required"]) == {"dataset", "new_data"}
        # one retrain at a time; a second waits for the slot
        assert retrain.global_concurrency_limit.limit == 2
        assert retrain.concurrency_options.collision_strategy.value == "ENQUEUE"
        [automation] = c.read_resource_related_automations(f"prefect.deployment.{retrain.id}")
        assert automation.enabled and automation.trigger.expect == {"tunegate.data.drift"}
        assert automation.trigger.match.model_dump() == {"prefect.resource.id": "tunegate.dataset.*"}
        action = automation.actions[0]
        assert action.type == "run-deployment" and action.deployment_id == retrain.id
        assert action.parameters["config"]["data"]["paths"] == ["{{ event.payload.new_data }}"]


def test_third_retrain_waits_for_a_slot(server, tmp_path):
    """The deployment's concurrency limit (two): a retrain proposed while two run is held back
    (AwaitingConcurrencySlot) and starts once one is over, it is not dropped."""
    from prefect.states import Cancelled, Pending, Running

    if not _deployed(server):
        assert tunegate("deploy", env=client_env(server, tmp_path / "state")).returncode == 0
    with client(server) as c:
        d = c.read_deployment_by_name("retrain/retrain")
        first, second, third = (c.create_flow_run_from_deployment(d.id) for _ in range(3))
        try:
            for run in (first, second):
                assert c.set_flow_run_state(run.id, Pending()).status.value == "ACCEPT"
                assert c.set_flow_run_state(run.id, Running()).status.value == "ACCEPT"
            held = c.set_flow_run_state(third.id, Pending())
            assert held.status.value == "REJECT" and held.state.name == "AwaitingConcurrencySlot"
            assert c.read_flow_run(third.id).state.is_scheduled()  # still there, waiting
            c.set_flow_run_state(first.id, Cancelled(), force=True)
            assert c.set_flow_run_state(third.id, Pending()).status.value == "ACCEPT"
        finally:
            for run in (first, second, third):
                c.set_flow_run_state(run.id, Cancelled(), force=True)


SLOT_FLOW = """
import json, sys, time
from prefect import flow
from flows.dataset_slot import dataset_slot

@flow(name="slot-probe")
def probe(dataset: str, out: str):
    with dataset_slot(dataset):
        started = time.time()
        time.sleep(4)
        with open(out, "a") as fh:
            fh.write(json.dumps({"dataset": dataset, "start": started, "end": time.time()}) + "\\n")

probe(sys.argv[1], sys.argv[2])
"""


def test_runs_of_one_dataset_queue_and_runs_of_two_datasets_overlap(server, tmp_path):
    """Issue 17: the dataset slot (a Prefect global concurrency limit per dataset, held by a whole retrain) on a real
    server: of three flow runs started together, the two of dataset A never overlap, the one of B overlaps an A."""
    import subprocess
    import sys

    out = tmp_path / "spans.jsonl"
    env = client_env(server, tmp_path / "state")
    procs = [subprocess.Popen([sys.executable, "-c", SLOT_FLOW, name, str(out)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ("slot-a", "slot-a", "slot-b")]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    spans = [json.loads(line) for line in out.read_text().splitlines()]
    a = sorted((s for s in spans if s["dataset"] == "slot-a"), key=lambda s: s["start"])
    [b] = [s for s in spans if s["dataset"] == "slot-b"]
    assert len(a) == 2 and a[0]["end"] <= a[1]["start"], a  # the second run of A waited for the first
    assert any(s["start"] < b["end"] and b["start"] < s["end"] for s in a), (a, b)  # B ran beside an A
    assert any("waited" in o for o in outputs), outputs
    with client(server) as c:
        assert c.read_global_concurrency_limit_by_name("dataset-slot-a").limit == 1


def test_serve_creates_the_landing_folder_and_leaves_deployments_as_they_were_when_stopped(server, tmp_path):
    """Stopping `tunegate serve` (SIGTERM, Ctrl-C) does not pause the deployments it served: schedules stay
    active for the next `serve` and the UI. A landing folder that does not exist yet is created and named."""
    landing = tmp_path / "incoming" / "corpus"
    log = tmp_path / "serve.log"
    proc = start([str(TUNEGATE), "serve", "--dataset", "corpus", "--new-data", str(landing)],
                 client_env(server, tmp_path / "state"), log)
    try:
        wait_registered(server, proc, log, "new_data", str(landing))
    finally:
        stop(proc)
    assert landing.is_dir() and f"created the drift monitor's landing folder {landing}" in log.read_text()
    with client(server) as c:
        for name in ("retrain/retrain", "drift-monitor/drift-monitor"):
            d = c.read_deployment_by_name(name)
            assert not d.paused and d.schedules and all(s.active for s in d.schedules), (name, d.paused, d.schedules)


def _deployed(api: str) -> bool:
    with client(api) as c:
        try:
            return c.read_deployment_by_name("retrain/retrain").global_concurrency_limit is not None
        except Exception:
            return False


# ------------------------------------------------------------------------------------------ serve + drift


def test_undrifted_drop_starts_no_retrain(served):
    api, tmp = served["api"], served["tmp"]
    drop = write_jsonl(tmp / "drops" / "same.jsonl", undrifted_texts(company_texts()))
    fr = run_monitor(served, drop)
    assert fr.state.is_completed(), fr.state
    rep = drift_report(served["home"], fr)
    assert rep["decision"] == "no drift" and not rep["drift"] and "event" not in rep
    assert rep["reference"]["kind"] == "path" and rep["statistics"]["duplicate_rate"] == 0.0
    time.sleep(5)  # an event would have started a run by now (it takes well under a second)
    assert [r for r in retrain_runs_by_automation(api)
            if r.parameters["config"]["data"]["paths"] == [str(drop)]] == []


def test_drifted_drop_starts_retrain_on_the_new_data(served):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    api, tmp = served["api"], served["tmp"]
    drop = write_jsonl(tmp / "drops" / "ops.jsonl", drifted_texts())
    fr = run_monitor(served, drop)
    assert fr.state.is_completed(), fr.state
    rep = drift_report(served["home"], fr)
    assert rep["drift"] and rep["decision"] == "drift" and rep["event"]["resource"] == "tunegate.dataset.corpus"
    assert (Path(rep["report"])).read_text().startswith(f"# Drift report `{rep['drift_id']}`")
    with client(api) as c:
        artifacts = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[fr.id])))
    assert [a.type for a in artifacts] == ["markdown"] and "DRIFT" in artifacts[0].data

    [run] = wait_for(lambda: [r for r in retrain_runs_by_automation(api)
                              if r.parameters["config"]["data"]["paths"] == [str(drop)]],
                     60, "the retrain run started by the drift trigger", served["proc"], served["log"])
    try:
        assert run.parameters["run_id"] == f"drift-corpus-{rep['drift_id']}"
        config = run.parameters["config"]
        assert config["train"]["max_steps"] == 4  # the served config, not prefect.yaml's
        from flows.config import PipelineConfig

        assert [str(p) for p in PipelineConfig.model_validate(config).data.paths] == [str(drop)]
    finally:
        cancel(api, run)
    wait_for(lambda: stopped(api, run, served["log"]), 180, "the cancelled retrain to stop", served["proc"],
             served["log"])


def test_serve_listens_on_loopback_only(served):
    sockets = sockets_over(served["proc"].pid, 2)
    print(f"\ntunegate serve listens on: {sorted({(a, p) for _, a, p in sockets}) or 'nothing'}")
    assert all(addr in LOOPBACK for _, addr, _ in sockets), sockets


def test_served_deployments_carry_the_schedules_of_prefect_yaml(served):
    with client(served["api"]) as c:
        for name in ("retrain", "drift-monitor"):
            d = c.read_deployment_by_name(f"{name}/{name}")
            assert [s.schedule.cron for s in d.schedules] == [s["cron"] for s in spec(name)["schedules"]]
        retrain = c.read_deployment_by_name("retrain/retrain")
        assert retrain.global_concurrency_limit.limit == 2
        assert len(c.read_resource_related_automations(f"prefect.deployment.{retrain.id}")) == 1


# ------------------------------------------------------------------------------------------ server


def test_server_starts_prefect_and_mlflow_and_ctrl_c_stops_both(tmp_path):
    import psutil

    home = tmp_path / "state"
    prefect_port, mlflow_port = free_port(), free_port()
    env = {**os.environ, **SERVER_ENV, "TUNEGATE_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    log = tmp_path / "server.log"
    proc = start([str(TUNEGATE), "server", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)],
                 env, log)
    children: list = []
    try:
        wait_for(lambda: "Ctrl-C stops both" in tail(log), 180, "tunegate server to print its URLs", proc, log, every=1)
        out = tail(log)
        assert f"Prefect UI  http://127.0.0.1:{prefect_port}" in out and f"MLflow UI   http://127.0.0.1:{mlflow_port}" in out
        children = psutil.Process(proc.pid).children(recursive=True)
        assert healthy(f"http://127.0.0.1:{prefect_port}/api/health") and healthy(f"http://127.0.0.1:{mlflow_port}/health")
        assert (home / "prefect" / "prefect.db").exists() and (home / "mlflow.db").exists()  # the state folder
        # every socket of the whole tree listens on loopback only, none on all interfaces (0.0.0.0 / ::)
        sockets = sockets_over(proc.pid, 2)
        print(f"\ntunegate server listens on: {sorted({(a, p) for _, a, p in sockets})}")
        assert {prefect_port, mlflow_port} <= {p for _, _, p in sockets}, sockets
        assert all(addr in LOOPBACK for _, addr, _ in sockets), sockets
        # the Prefect UI served there calls the API on that port, not Prefect's default 4200
        ui = httpx.get(f"http://127.0.0.1:{prefect_port}/ui-settings", timeout=30, follow_redirects=True).json()
        assert ui["api_url"] == f"http://127.0.0.1:{prefect_port}/api", ui
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
        stopping = time.monotonic()
        try:
            proc.wait(timeout=60)  # bounded by the command itself (STOP_LIMIT_S, 30 s)
        except subprocess.TimeoutExpired:
            # seen in full CI runs only (2 of 4, never alone): the process neither stopped nor hit its own 30 s
            # faulthandler bound, as if it did not run at all; say what the kernel says about it, then wait on
            print("tunegate server not stopped 60 s after Ctrl-C; its state:\n" + process_state(proc.pid))
            proc.wait(timeout=240)
        print(f"FIGURE tunegate server stopped {time.monotonic() - stopping:.1f} s after Ctrl-C")
        if "Timeout (0:00:30)!" in tail(log, 100_000):  # what faulthandler writes when stopping hit its bound
            print("stop hit its bound; where it was:\n" + tail(log, 8000))
        assert "stopping the Prefect and MLflow servers" in tail(log, 100_000)
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
        assert not healthy(f"http://127.0.0.1:{prefect_port}/api/health")
    finally:
        stop(proc, grace=5)
        for c in children:
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass


def process_state(pid: int) -> str:
    """What the kernel says about a process that does not react: status, load, and each thread's state and wait
    channel (and kernel stack, readable as root)."""
    import psutil

    lines = [f"load average {os.getloadavg()}"]
    try:
        p = psutil.Process(pid)
        lines.append(f"status {p.status()}, threads {p.num_threads()}, cpu {p.cpu_times()}")
    except psutil.Error as exc:
        lines.append(f"psutil: {exc}")
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        parts = []
        for name in ("stat", "wchan", "stack"):
            try:
                parts.append((task / name).read_text(errors="replace").strip()[:600])
            except OSError as exc:
                parts.append(f"({name}: {exc.strerror})")
        lines.append(f"thread {task.name}: " + " | ".join(parts))
    return "\n".join(lines)
