"""The pipeline commands: ``run`` (the whole retrain flow, with the terminal view), ``prepare`` (the state
folder made ready for a first run) and ``init`` (a config to edit)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows import temporary_api
from flows.cli.app import EXIT_BLOCKED, app, config_or_fail, fail, prefect_home
from tasks.core import failpoints
from tasks.core.paths import DEMO_CONFIG
from tasks.core.state import StatePaths

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # what infra/fetch_smollm2.py fetches


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="pipeline config YAML")] = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="data path(s), replacing the config's")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="name of the run folder")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="rerun RUN_ID: reuse its snapshots, resume training")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show the libraries' logs too (always in run.log)")] = False,
) -> None:
    """Run the whole pipeline: ingest → … → train → evaluate → gates → registry."""
    from tasks.core.state import check_run_id, new_run_id

    state = StatePaths.from_env()
    for option, value in (("--run-id", run_id), ("--resume", resume)):
        try:
            check_run_id(value) if value is not None else None
        except ValueError as exc:
            fail(f"{option}: {exc}", 2)
    if resume:
        if config or data or run_id:
            fail("--resume takes the run's saved config; leave out --config, --data and --run-id", 2)
        config = state.run_dir(resume) / "config.yaml"
        if not config.is_file():
            fail(f"no run to resume: {config} does not exist")
        run_id = resume
    elif run_id and state.run_dir(run_id).exists():
        fail(f"--run-id: run {run_id} exists ({state.run_dir(run_id)}): `tunegate run --resume {run_id}` reruns it "
             "with its saved config; a new run needs a new id", 2)
    prefect_home(state, verbose)
    prefect_api_ready = temporary_api.start()  # starts while the config and the pipeline import
    cfg = config_or_fail(config)
    if data:
        missing = [str(p) for p in data if not p.exists()]
        if missing:
            fail(f"--data: no such file or folder: {', '.join(missing)}")
        cfg.data.paths = [p.resolve() for p in data]
    if not cfg.data.paths and not cfg.ingest.hub_datasets:
        fail("data.paths is empty: give data paths in the config or with --data")
    for p in cfg.data.paths:
        if not Path(p).exists():
            fail(f"data.paths: no such file or folder: {p}")
    _check_base_model(cfg)
    files = [(f"contract.{kind}", p) for kind, p in cfg.contract.suites().items()] + [("gates.file", cfg.gates.file)]
    if cfg.evaluate.extraction.planted_file is not None:
        files.append(("evaluate.extraction.planted_file", cfg.evaluate.extraction.planted_file))
    for label, p in files:
        if not Path(p).is_file():
            fail(f"{label}: file not found: {p}")
    run_id = run_id or new_run_id()
    log_path = state.run_dir(run_id) / "run.log"
    typer.echo(f"run {run_id}: {len(cfg.data.paths)} data path(s), base model {cfg.model.base_model or 'tiny (random)'}"
               f"; library logs in {log_path}")
    failpoints.arm()  # the fault matrix (bench/fault_matrix.py) only
    rep, problem = _run_flow(cfg, run_id, state, prefect_api_ready, log_path, verbose)
    if problem:
        fail(problem)
    where = state.run_dir(rep["run_id"]) / "report.md"
    model = rep.get("model") or {}
    for reason in rep["blocked_by"] if len(rep["blocked_by"]) > 1 else []:
        typer.echo(f"  - {reason}")
    if rep["status"] == "promoted":
        typer.echo(f"promoted {model['name']} v{model['version']} to @champion (report: {where})")
    elif rep["status"] == "blocked" and not model:  # a data contract stopped it before training
        typer.echo(f"blocked before training: {'; '.join(rep['blocked_by'])}; nothing registered (report: {where})")
        raise typer.Exit(EXIT_BLOCKED)
    elif rep["status"] == "blocked":
        typer.echo(f"blocked: {model.get('name')} v{model.get('version')} stays @challenger; "
                   f"{'; '.join(rep['blocked_by'])} (report: {where})")
        raise typer.Exit(EXIT_BLOCKED)
    else:
        fail(f"run {rep['run_id']} failed: {rep.get('error')} (report: {where}; log: {log_path})")


def _run_flow(cfg, run_id: str, state: StatePaths, prefect_api_ready, log_path: Path, verbose: bool):
    """The retrain flow with the libraries' output in ``log_path`` and the stage view on the terminal;
    returns (report, None), or (None, a one-line problem) when it could not start."""
    from flows import terminal
    from tasks.core import progress

    with terminal.libraries_to(log_path, verbose) as out, terminal.view_for(out) as view, progress.use(view):
        from flows.retrain import retrain
        from tasks.core.executor import close_clients

        try:
            prefect_api_ready()
        except temporary_api.TemporaryApiError as exc:
            return None, str(exc)
        started = time.time()
        try:
            final = retrain(cfg, run_id=run_id, home=str(state.home), return_state=True)
        finally:
            close_clients()
    written = state.run_dir(run_id) / "report.json"
    if not written.is_file() or written.stat().st_mtime < started - 1:  # failed before writing this run's report
        return None, f"run {run_id} failed before writing its report: {final.message} (log: {log_path})"
    return json.loads(written.read_text()), None


def _check_base_model(cfg) -> None:
    """A base model that is a local path must be there before anything starts."""
    from tasks.train.model import looks_like_path

    spec = cfg.model.base_model
    if spec and looks_like_path(spec) and not Path(spec).exists():
        hint = (": run `make install` (it fetches SmolLM2-135M-Instruct) or `python infra/fetch_smollm2.py`"
                if Path(spec).name == SMOLLM2_GGUF else "")
        fail(f"model.base_model: no such file or folder: {spec}{hint}")


@app.command()
def prepare(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="pipeline config YAML")] = None,
) -> None:
    """Make the state folder ready for a first run: the config's base model (a .gguf is dequantized once), the
    Prefect database and the MLflow store created. A run does each itself when it is missing; this moves the
    one-off work out of the first run (`make install` calls it)."""
    import subprocess

    from tasks.registry.store import ensure_store
    from tasks.train.model import BaseModelError, resolve_base

    cfg = config_or_fail(config)
    state = StatePaths.from_env()
    if cfg.model.base_model:
        _check_base_model(cfg)
        try:
            base = resolve_base(cfg.model.base_model, state.models)
        except BaseModelError as exc:
            fail(str(exc))
        typer.echo(f"base model {base.description}: {base.folder}")
    else:
        typer.echo("model.base_model is not set: the tiny model is built from its settings when a run starts")
    prefect_home(state)
    if not os.environ.get("PREFECT_API_URL"):  # the ephemeral API's database, migrated once
        proc = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                              capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            fail(f"could not create the Prefect database in {os.environ['PREFECT_HOME']}: "
                 f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        typer.echo(f"Prefect database: {os.environ['PREFECT_HOME']}")
    uri = cfg.registry.tracking_uri or state.mlflow_uri()
    with state.lock("registry"):
        ensure_store(uri)
    typer.echo(f"MLflow store: {uri}")


@app.command()
def init(
    out: Annotated[Path, typer.Argument(help="the config file to write")],
    source: Annotated[Optional[Path], typer.Option("--from", help="config to start from (default: the demo's)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace OUT if it exists")] = False,
) -> None:
    """Write a config to edit: the demo's (or --from's) with its paths made absolute, so it runs from any folder."""
    from flows.config import ConfigError, relocated_config_text

    source = source or DEMO_CONFIG
    if out.exists() and not overwrite:
        fail(f"{out} exists: choose another name or pass --overwrite")
    try:
        text = relocated_config_text(source)
    except ConfigError as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out} (from {source}); run it with: tunegate run --config {out}")
