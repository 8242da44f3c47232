"""Shared test set-up: offline environment, a state folder per test, and small corpora."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tasks.core.offline import apply_offline_environment

apply_offline_environment()
ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "corpus"
PLANTED = ROOT / "examples" / "PLANTED.json"
SHARED_EVAL = ROOT.parent / "shared" / "eval"
TUNEGATE = Path(sys.executable).with_name("tunegate")
README = ROOT / "README.md"
COMMAND_START = ("make ", ".venv/bin/", "cd ", "tunegate ", "/path/to/tunegate/")


def readme_commands(section: str | None = None) -> list[str]:
    """The command lines of the README's indented code blocks (comments cut), in order; with ``section``
    (a heading such as "## Quick start"), only those under that heading."""
    lines = README.read_text().splitlines()
    if section is not None:
        start = lines.index(section) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[start:end]
    return [re.sub(r"\s+#\s.*$", "", line.strip()) for line in lines
            if line.startswith("    ") and line.strip().startswith(COMMAND_START)]


@pytest.fixture(scope="session")
def extensions_dir(tmp_path_factory) -> Path:
    """DeepSpeed's JIT-compiled CPU ops, built once for the whole session."""
    path = tmp_path_factory.mktemp("torch_extensions")
    os.environ["TORCH_EXTENSIONS_DIR"] = str(path)
    return path


_PREFECT_DB: list[Path] = []


def seed_prefect_db(home: Path) -> None:
    """Put a migrated Prefect database into a new state folder (as `tunegate prepare` does), copied from one
    migrated once per test process: each run's temporary Prefect server then starts without applying every
    migration first (about 20 s on two cores). A state folder that has a database keeps it."""
    db = Path(home) / "prefect" / "prefect.db"
    if db.exists():
        return
    if not _PREFECT_DB:
        folder = Path(tempfile.mkdtemp(prefix="tunegate-prefect-db-"))
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], check=True,
                       env={**env, "PREFECT_HOME": str(folder)}, capture_output=True, timeout=600)
        _PREFECT_DB.append(folder / "prefect.db")
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_PREFECT_DB[0], db)


def run_cli(*args: str, home: Path, cwd: Path = ROOT, timeout: int = 900, env: dict | None = None):
    """The installed `tunegate` command, as a user runs it, with its own state folder (a `run` in a new one
    gets a migrated Prefect database, as after `tunegate prepare`)."""
    if args and args[0] == "run":
        seed_prefect_db(home)
    full_env = {**os.environ, "TUNEGATE_HOME": str(home)}
    for leaked in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        full_env.pop(leaked, None)  # mlflow.set_tracking_uri() in an earlier test exports its URI
    full_env.update(env or {})
    return subprocess.run([str(TUNEGATE), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def tiny_config() -> dict:
    """configs/tiny.yaml as a dict with every path absolute, for tests to adjust and write elsewhere."""
    from flows.config import load_config

    return load_config(ROOT / "configs" / "tiny.yaml").model_dump(mode="json")


@pytest.fixture(autouse=True)
def _restore_tracking_env():
    """mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ: undo it after each test."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def corpus_copy(tmp_path) -> Path:
    dest = tmp_path / "corpus"
    shutil.copytree(CORPUS, dest)
    return dest


@pytest.fixture(scope="session", autouse=True)
def _close_dask_clusters():
    """Stop the LocalClusters the stages started while pytest's output streams are still open."""
    yield
    from tasks.core.executor import close_clients

    close_clients()


def company_documents() -> list[Path]:
    """Plain-text company documents of the sample corpus: the product manuals and the policies (15 files,
    ~21k characters, no planted PII or duplicates)."""
    return sorted(CORPUS.glob("manuals/*.md")) + sorted(CORPUS.glob("policies/*.txt"))


@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory):
    """(tokenizer, base model, dataset) for the trainer tests, built once: a curated snapshot of the company
    documents, a BPE tokenizer (vocab 1024), a tiny Llama (hidden 64, 2 layers) and the split packed into
    64-token blocks. Tests write their runs into a folder of their own (``prepared`` in each module)."""
    from tasks.train import dataset, model, tokenizer
    from tasks.core import snapshot
    from tasks.core.records import make_document, to_table

    root = tmp_path_factory.mktemp("tiny-training")
    docs = [make_document(f"{p.parent.name}/{p.name}", 0, p.read_text(), "text/plain", {})
            for p in company_documents()]
    ref = snapshot.materialize(root / "snap", "curated", input_fingerprint="company-documents", params={},
                               code_version="t", produce=lambda stats, extra: [to_table(docs)])
    tok = tokenizer.prepare(ref, tokenizer.TokenizerSettings(vocab_size=1024), None, root / "tok")
    base = model.prepare(model.ModelSettings(tiny=model.TinyModelSettings(hidden_size=64, layers=2, heads=2,
                                                                          intermediate_size=128)),
                         tok.path, tok.content_hash, root / "models")
    data = dataset.prepare(ref, tok.path, 64, dataset.SplitSettings(), root / "data")
    return tok, base, data


# The slowest files (seconds, measured under `-n 2 --dist loadfile`) go first, so that the two workers finish
# together instead of one running a long pipeline test alone at the end (longest-processing-time-first).
SLOW_FILES = {
    "test_retrain_e2e.py": 900, "test_retrain_tiny.py": 500, "test_faults.py": 380, "test_operations.py": 380,
    "test_load.py": 320, "test_topology.py": 270, "test_gates_block.py": 250, "test_concurrent_retrain.py": 180,
    "test_gates_registry.py": 260, "test_access.py": 150, "test_gc.py": 60, "test_trainer_resume.py": 140, "test_trainer_zero.py": 130,
    "test_prepare.py": 120, "test_stage_cli.py": 110, "test_run_leaks.py": 100, "test_base_models.py": 100,
    "test_gateway.py": 150, "test_empty_inputs.py": 95, "test_readme.py": 90, "test_corrections_retrain.py": 70,
    "test_prompt_drift.py": 60, "test_drift_calibration.py": 80, "test_drift_retrain.py": 130, "test_registry_retry.py": 30,
    "test_hostile_inputs.py": 65, "test_wheel.py": 60, "test_drift.py": 110, "test_trainer_methods.py": 45,
}


def pytest_runtest_setup(item):
    """A test of a module that reads the public evaluation data (its SHARED_EVAL) fails, saying why, when that
    data is not beside the checkout: never a silent skip."""
    if getattr(item.module, "SHARED_EVAL", None) is not None and not SHARED_EVAL.is_dir():
        pytest.fail(f"{SHARED_EVAL} is missing: this test reads the public evaluation data (PII benchmark, documents, "
                    "corpora) that lies beside the checkout as ../shared/eval", pytrace=False)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -SLOW_FILES.get(item.path.name, 0))  # stable: file order kept among the rest


def pytest_configure(config):
    """Under xdist, each worker gets its own CPUs: two workers' torch threads then never fight over both cores
    (oversubscribed OpenMP threads spin and slow both runs down); processes a test starts inherit the mask."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    workers = int(count)
    if len(cpus) < workers:
        return
    index = int(worker.removeprefix("gw")) % workers  # a worker xdist starts in place of a crashed one is gw2, gw3...
    share = len(cpus) // workers
    os.sched_setaffinity(0, cpus[index * share:(index + 1) * share])
