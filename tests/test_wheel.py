"""tunegate installed from a wheel, away from the checkout: the wheel is built from a copy of the sources,
installed into a fresh virtual environment in a temporary folder (the project venv's dependencies visible
through a .pth file, its editable install of tunegate not: .pth files in a folder that a .pth file adds are
not processed), and `tunegate` runs from a folder that is not the checkout. The files the code reads at run
time (data contracts, DeepSpeed templates, configs, prefect.yaml) come from inside the installed package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import CORPUS, ROOT
from tasks.core.paths import SHIPPED, SHIPPED_FOLDER

# not copied: what git ignores at the top of the checkout (build/ in particular: setuptools builds in place, and
# a stale build/lib would put modules deleted since into the wheel), and caches anywhere
TOP_LEVEL_LEFT_OUT = {".git", ".venv", ".tunegate", "build", "models", "data", ".pytest_cache", ".hypothesis",
                      ".whl", ".gl", ".env"}
INSIDE = f"tasks/core/{SHIPPED_FOLDER}"

# run by the installed venv's python: where the code and the project's files come from, the default config, the
# shipped raw contract run on an ingested snapshot (argv 1; argv 2 a store), the DeepSpeed template of the demo's
# ZeRO 2 and the drift thresholds
CHECK = """
import json, sys
from pathlib import Path

import flows.cli, tasks
from flows.config import default_config_path, load_config_or_default
from tasks.core import paths, snapshot
from tasks.data import drift_stats
from tasks.data.contracts import validate_snapshot
from tasks.train.trainer import ds_config

cfg = load_config_or_default()
drift_stats.load_thresholds(None)
result = validate_snapshot(snapshot.open_input(Path(sys.argv[1]), Path(sys.argv[2])), cfg.contract.raw, "raw")
print(json.dumps({"code": [tasks.__file__, flows.cli.__file__], "root": str(paths.PROJECT_ROOT),
                  "config": str(default_config_path()), "suite": str(cfg.contract.raw), "passed": result.passed,
                  "rows": result.rows, "deepspeed": str(ds_config.config_path(cfg.train)),
                  "drift": str(drift_stats.DEFAULT_THRESHOLDS)}))
"""


def _left_out(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == ROOT
    return {n for n in names if n == "__pycache__" or n.endswith(".egg-info")
            or (top and (n in TOP_LEVEL_LEFT_OUT or n.startswith(".acc-")))}


def shipped_in_checkout() -> set[str]:
    out = set()
    for entry in SHIPPED:
        path = ROOT / entry
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        out |= {str(p.relative_to(ROOT)) for p in files if "__pycache__" not in p.parts}
    return out


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_left_out)
    _run([sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", tmp / "dist", src])
    (found,) = (tmp / "dist").glob("tunegate-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> dict:
    """A fresh venv with the wheel installed (into it alone: the .pth to the project venv comes after, so pip
    never sees the editable install), and the environment to run it in, from a folder outside the checkout."""
    tmp = tmp_path_factory.mktemp("venv")
    env_dir = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", env_dir])
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", python, "install", "--no-deps",
          "--no-index", "-q", wheel])
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "tunegate-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith(("PREFECT_API", "MLFLOW_"))}
    env.update(TUNEGATE_HOME=str(tmp / "state"), PYTHONNOUSERSITE="1")
    work = tmp / "work"  # the folder commands run in: no configs/, data_contracts/ or infra/ here
    work.mkdir()
    return {"python": python, "tunegate": env_dir / "bin" / "tunegate", "site": site, "env": env, "work": work}


def test_the_wheel_carries_the_project_files_and_nothing_outside_its_packages(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    inside = {n.removeprefix(f"{INSIDE}/") for n in names if n.startswith(f"{INSIDE}/")}
    assert inside == shipped_in_checkout()
    assert {"data_contracts/raw.json", "data_contracts/gates.yaml", "infra/deepspeed/zero2.json",
            "configs/demo.yaml", "prefect.yaml"} <= inside
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"  # tunegate-0.1.0.dist-info
    assert {n.split("/")[0] for n in names} == {"tasks", "flows", dist_info}
    assert "flows/cli/__init__.py" in names and "tasks/core/paths.py" in names


def test_installed_tunegate_runs_a_stage_on_its_shipped_files_from_another_folder(venv, tmp_path):
    run = {"cwd": venv["work"], "env": venv["env"]}
    site = venv["site"]
    helped = _run([venv["tunegate"], "run", "--help"], **run)
    assert "--config" in helped.stdout and "--resume" in helped.stdout

    # a stage on a folder of documents, with the default config (the shipped configs/demo.yaml: none here)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("policies/sla.txt", "policies/security.txt"):
        shutil.copy(CORPUS / name, docs)
    (docs / "note.txt").write_text("The depot in Leeds ships replacement wheels for the K-20 on Tuesdays.\n")
    out = tmp_path / "raw"
    ingested = _run([venv["tunegate"], "ingest", docs, "--out", out], **run)
    assert ingested.stdout.strip().startswith("3 documents from 3 inputs, 0 quarantined"), ingested.stdout

    # the code and every file it read come from the installed package
    checked = _run([venv["python"], "-c", CHECK, out, tmp_path / "store"], **run)
    got = json.loads(checked.stdout.strip().splitlines()[-1])
    shipped = site / INSIDE
    assert got == {"code": [str(site / "tasks/__init__.py"), str(site / "flows/cli/__init__.py")],
                   "root": str(shipped), "config": str(shipped / "configs/demo.yaml"),
                   "suite": str(shipped / "data_contracts/raw.json"), "passed": True, "rows": 3,
                   "deepspeed": str(shipped / "infra/deepspeed/zero2.json"),
                   "drift": str(shipped / "data_contracts/drift.yaml")}
