"""Shared test set-up: offline environment, a state folder per test, and small corpora."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.offline import apply_offline_environment

apply_offline_environment()
ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "corpus"
PLANTED = ROOT / "examples" / "PLANTED.json"
SHARED_EVAL = ROOT.parent / "shared" / "eval"
TUNEGATE = Path(sys.executable).with_name("tunegate")


@pytest.fixture(scope="session")
def extensions_dir(tmp_path_factory) -> Path:
    """DeepSpeed's JIT-compiled CPU ops, built once for the whole session."""
    path = tmp_path_factory.mktemp("torch_extensions")
    os.environ["TORCH_EXTENSIONS_DIR"] = str(path)
    return path


def run_cli(*args: str, home: Path, cwd: Path = ROOT, timeout: int = 900, env: dict | None = None):
    """The installed `tunegate` command, as a user runs it, with its own state folder."""
    full_env = {**os.environ, "TUNEGATE_HOME": str(home)}
    for leaked in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        full_env.pop(leaked, None)  # mlflow.set_tracking_uri() in an earlier test exports its URI
    full_env.update(env or {})
    return subprocess.run([str(TUNEGATE), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


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
    from tasks.executor import close_clients

    close_clients()
