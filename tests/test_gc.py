"""`tunegate gc` (issue 16): a state folder of four runs and a real MLflow registry (SQLite) of four versions
registered from logged models; what gc keeps (the newest run whole, the champion's and the newest version's
snapshot chains, every report, the kept versions' artifacts), what it drops (older runs' checkpoints and training
blocks, the version nothing keeps with its model's artifacts, unreferenced snapshots, a dead writer's temporary
folder, old cache entries), the dry run changing nothing, a second pass finding nothing, and gc refusing to touch
a state folder a run is working in. The soak of 20 real runs with gc between them is bench/soak.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from conftest import ROOT, TUNEGATE

MODEL = "gc-model"


def _chain(store: Path, run: str) -> dict[str, str]:
    """ingest -> clean -> dedup -> pii snapshots of ``run``'s own documents; stage -> folder."""
    from tasks.core import snapshot

    parent, out = None, {}
    for i, stage in enumerate(("ingest", "clean", "dedup", "pii")):
        table = pa.table({"id": [f"{run}-{n}" for n in range(50)], "text": [f"{run} {stage} document {n}" for n in range(50)]})
        ref = snapshot.write(store, stage, f"{run}-{stage}", [table], parent=parent, params={}, stats={})
        parent, out[stage] = ref.fingerprint, ref.path
    return out


def _run_folder(runs: Path, run: str, chain: dict[str, str], started: float, version: str | None) -> None:
    folder = runs / run
    (folder / "train" / "checkpoints" / "checkpoint-000010").mkdir(parents=True)
    (folder / "train" / "checkpoints" / "checkpoint-000010" / "mp_rank_00_model_states.pt").write_bytes(b"w" * 200_000)
    (folder / "train" / "adapter").mkdir()
    (folder / "train" / "adapter" / "adapter_model.safetensors").write_bytes(b"a" * 1000)
    (folder / "data").mkdir()
    (folder / "data" / "train.bin").write_bytes(b"t" * 50_000)
    (folder / "config.yaml").write_text("{}\n")
    model = {"name": MODEL, "version": version} if version else None  # r1's report names no version (failed)
    (folder / "report.json").write_text(json.dumps({"run_id": run, "status": "promoted" if version else "failed",
                                                    "model": model, "snapshots": {
        stage: {"path": path, "stage": stage} for stage, path in chain.items()}}))
    os.utime(folder / "config.yaml", (started, started))


@pytest.fixture()
def state(tmp_path):
    """runs r1..r4 (r4 newest), each with its snapshot chain; versions v1..v4 trained on them; @champion v2, the
    champion before it v1."""
    import mlflow

    from tasks.core import snapshot
    from tasks.registry.store import tracking
    from tasks.registry.versions import HISTORY_TAG

    home = tmp_path / "state"
    store = home / "snapshots"
    chains = {}
    for i, run in enumerate(("r1", "r2", "r3", "r4")):
        chains[run] = _chain(store, run)
        _run_folder(home / "runs", run, chains[run], time.time() - 1000 + 100 * i, str(i + 1) if i else None)
    dead = store / "pii" / f".half{snapshot._TMP}{snapshot._host()}-999999-0badc0de"  # a writer killed mid-write
    dead.mkdir()
    (dead / "part-00000.parquet").write_bytes(b"p" * 1000)
    for i in range(3):  # finished trainings (train.reuse) and evaluations, oldest first
        (home / "train-cache" / f"job{i}").mkdir(parents=True)
        (home / "train-cache" / f"job{i}" / "adapter.bin").write_bytes(b"c" * 1000)
        (home / "eval-cache").mkdir(exist_ok=True)
        (home / "eval-cache" / f"eval{i}.json").write_text("{}")
        for p in (home / "train-cache" / f"job{i}", home / "eval-cache" / f"eval{i}.json"):
            os.utime(p, (time.time() - 100 + i, time.time() - 100 + i))
    uri = f"sqlite:///{home / 'mlflow.db'}"
    c = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    c.create_registered_model(MODEL)
    experiment = c.create_experiment("tunegate", artifact_location=(home / "mlartifacts").as_uri())
    for run in ("r1", "r2", "r3", "r4"):  # each version registered from a logged model, as tunegate registers
        pii = json.loads((Path(chains[run]["pii"]) / snapshot.MANIFEST).read_text())["fingerprint"]
        mlflow_run = c.create_run(experiment, run_name=run).info.run_id
        logged = c.create_logged_model(experiment, name="model", source_run_id=mlflow_run)
        c.log_model_artifacts(logged.model_id, str(home / "runs" / run / "train"))
        c.finalize_logged_model(logged.model_id, "READY")
        with tracking(uri):  # the registry store finds a models:/m-… source through the global tracking URI
            c.create_model_version(MODEL, source=f"models:/{logged.model_id}", run_id=mlflow_run,
                                   model_id=logged.model_id, tags={"snapshot_fingerprint": pii, "tunegate.run_id": run})
    c.set_registered_model_alias(MODEL, "champion", "2")
    c.set_registered_model_tag(MODEL, HISTORY_TAG, json.dumps(["1"]))
    config = tmp_path / "gc.yaml"
    config.write_text(yaml.safe_dump({"registry": {"model_name": MODEL},
                                      "retention": {"keep_runs": 1, "keep_versions": 1, "keep_train_cache": 1,
                                                    "keep_eval_cache": 2}}))
    return {"home": home, "uri": uri, "chains": chains, "dead": dead, "config": config, "client": c}


def tunegate(state, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNEGATE_HOME": str(state["home"]), "MLFLOW_TRACKING_URI": state["uri"]}
    return subprocess.run([str(TUNEGATE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def gc(state, *args: str) -> subprocess.CompletedProcess:
    return tunegate(state, "gc", "--config", str(state["config"]), *args)


def listing(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if "locks" not in p.parts and p.name != "mlflow.db")


def artifacts_of(c, version: str) -> Path:
    """The local folder holding a version's logged model's artifacts."""
    from tasks.registry.version_gc import logged_model_id

    model_id = logged_model_id(c.get_model_version(MODEL, version))
    return Path(c.get_logged_model(model_id).artifact_location.removeprefix("file://"))


def test_gc_keeps_what_runs_and_versions_name_and_drops_the_rest(state):
    home, chains = state["home"], state["chains"]
    before = listing(home)
    dry = gc(state, "--dry-run", "-v")
    assert dry.returncode == 0, dry.stderr
    assert listing(home) == before, "a dry run changed the state folder"
    assert "would remove checkpoints" in dry.stdout and "would remove snapshot" in dry.stdout, dry.stdout
    assert f"would delete {MODEL} v3 and its model's artifacts" in dry.stdout, dry.stdout
    c = state["client"]
    v3 = c.get_model_version(MODEL, "3")
    v3_artifacts, kept_artifacts = artifacts_of(c, "3"), {v: artifacts_of(c, v) for v in ("1", "2", "4")}
    assert (v3_artifacts / "adapter" / "adapter_model.safetensors").is_file()

    done = gc(state)
    assert done.returncode == 0, done.stderr
    print("\n" + done.stdout)
    exists = {run: {stage: Path(p).is_dir() for stage, p in chain.items()} for run, chain in chains.items()}
    assert all(exists["r4"].values()), "the newest run's snapshots (and v4's) must stay"
    assert all(exists["r2"].values()), "the champion's training snapshot and what it was made from must stay"
    assert all(exists["r1"].values()), "the previous champion (what rollback goes back to) keeps its snapshots"
    assert not any(exists["r3"].values()), exists
    assert not state["dead"].exists()
    for run in ("r1", "r2", "r3"):
        assert not (home / "runs" / run / "train" / "checkpoints").exists() and not (home / "runs" / run / "data").exists()
        assert (home / "runs" / run / "report.json").is_file()
        # the adapter goes once the registry holds it (r2, r3); r1's report names no version: its adapter stays
        assert (home / "runs" / run / "train" / "adapter").is_dir() == (run == "r1"), run
    assert (home / "runs" / "r4" / "train" / "checkpoints" / "checkpoint-000010").is_dir()
    assert sorted(p.name for p in (home / "train-cache").iterdir()) == ["job2"]
    assert sorted(p.name for p in (home / "eval-cache").iterdir()) == ["eval1.json", "eval2.json"]
    # v3 (no alias, not the newest, never champion) is deleted with its weights; its MLflow run stays, tagged
    assert sorted(str(v.version) for v in c.search_model_versions(f"name='{MODEL}'")) == ["1", "2", "4"]
    assert not v3_artifacts.exists() and all((p / "adapter").is_dir() for p in kept_artifacts.values())
    assert "deleted by tunegate gc" in c.get_run(v3.run_id).data.tags["tunegate.gc"]
    assert c.get_run(v3.run_id).info.lifecycle_stage == "active"
    with pytest.raises(Exception, match="not found|does not exist|RESOURCE_DOES_NOT_EXIST"):
        c.get_logged_model(v3.source.removeprefix("models:/"))
    assert str(c.get_model_version_by_alias(MODEL, "champion").version) == "2"
    models = tunegate(state, "models", "--name", MODEL)
    assert models.returncode == 0 and "v3" not in models.stdout, models.stdout + models.stderr

    again = gc(state)
    assert again.returncode == 0 and again.stdout.startswith("nothing to remove"), again.stdout


def test_gc_with_delete_versions_off_keeps_every_version_and_tags_those_whose_snapshot_went(state):
    config = yaml.safe_load(state["config"].read_text())
    config["retention"]["delete_versions"] = False
    state["config"].write_text(yaml.safe_dump(config))
    done = gc(state)
    assert done.returncode == 0 and "delete" not in done.stdout, done.stdout + done.stderr
    c = state["client"]
    tags = {v: c.get_model_version(MODEL, v).tags for v in ("1", "2", "3", "4")}
    assert [v for v, t in tags.items() if "snapshot_gc" in t] == ["3"], tags
    assert (artifacts_of(c, "3") / "adapter").is_dir()
    assert not any(Path(p).is_dir() for p in state["chains"]["r3"].values())


def test_gc_never_removes_under_a_working_run(state):
    """A run holds the state folder's in-use lock shared while it works (flows/retrain_run.py): gc refuses, or with
    --wait waits for it to end."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tasks.core.state import IN_USE_LOCK, StatePaths\n"
         f"with StatePaths.from_env({str(state['home'])!r}).lock(IN_USE_LOCK, shared=True):\n"
         "    print('held', flush=True); time.sleep(float(sys.argv[1]))", "20"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = listing(state["home"])
        refused = gc(state)
        assert refused.returncode == 1 and "runs are working" in refused.stderr, refused.stderr
        assert listing(state["home"]) == before
        waited = gc(state, "--wait", "120")
        assert waited.returncode == 0 and "removed" in waited.stdout, waited.stderr
        assert holder.poll() is not None, "gc ran while the run still held the state folder"
    finally:
        holder.kill()
        holder.wait()
