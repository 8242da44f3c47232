"""The ``tunegate`` command.

Exit codes: 0 done (``run``: promoted), 3 blocked by a contract or a gate, 1 an error (one line naming
the file, field or setting at fault), 2 wrong usage.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows import temporary_api
from tasks.state import StatePaths

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Retrain language models behind data contracts and evaluation gates.")
EXIT_BLOCKED, EXIT_ERROR = 3, 1
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # what infra/fetch_smollm2.py fetches


def _prefect_home(state: StatePaths, verbose: bool = True) -> None:
    """Prefect's ephemeral API keeps its SQLite database in the state folder unless told otherwise; its logs
    have no colour codes when they go to a run's log file."""
    (state.home / "prefect").mkdir(parents=True, exist_ok=True)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_COLORS", "false")
    os.environ.setdefault("PREFECT_HOME", str(state.home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tunegate")  # stage progress in the run's logs


def fail(message: str, code: int = EXIT_ERROR) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _config(path: Optional[Path]):
    from flows.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc))


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="pipeline config YAML")] = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="data path(s), replacing the config's")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="name of the run folder")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="rerun RUN_ID: reuse its snapshots, resume training")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show the libraries' logs too (always in run.log)")] = False,
) -> None:
    """Run the whole pipeline: ingest → … → train → evaluate → gates → registry."""
    from tasks.state import new_run_id

    state = StatePaths.from_env()
    if resume:
        if config or data or run_id:
            fail("--resume takes the run's saved config; leave out --config, --data and --run-id", 2)
        config = state.run_dir(resume) / "config.yaml"
        if not config.is_file():
            fail(f"no run to resume: {config} does not exist")
        run_id = resume
    _prefect_home(state, verbose)
    prefect_api_ready = temporary_api.start()  # starts while the config and the pipeline import
    cfg = _config(config)
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
    from tasks import progress

    with terminal.libraries_to(log_path, verbose) as out, terminal.view_for(out) as view, progress.use(view):
        from flows.retrain import retrain
        from tasks.executor import close_clients

        try:
            prefect_api_ready()
        except temporary_api.TemporaryApiError as exc:
            return None, str(exc)
        try:
            return retrain(cfg, run_id=run_id, home=str(state.home)), None
        finally:
            close_clients()


def _check_base_model(cfg) -> None:
    """A base model that is a local path must be there before anything starts."""
    from tasks.model import looks_like_path

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

    from tasks import registry
    from tasks.model import BaseModelError, resolve_base

    cfg = _config(config)
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
    _prefect_home(state)
    if not os.environ.get("PREFECT_API_URL"):  # the ephemeral API's database, migrated once
        proc = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                              capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            fail(f"could not create the Prefect database in {os.environ['PREFECT_HOME']}: "
                 f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        typer.echo(f"Prefect database: {os.environ['PREFECT_HOME']}")
    uri = cfg.registry.tracking_uri or state.mlflow_uri()
    with state.lock("registry"):
        registry.ensure_store(uri)
    typer.echo(f"MLflow store: {uri}")


@app.command()
def init(
    out: Annotated[Path, typer.Argument(help="the config file to write")],
    source: Annotated[Optional[Path], typer.Option("--from", help="config to start from (default: the demo's)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace OUT if it exists")] = False,
) -> None:
    """Write a config to edit: the demo's (or --from's) with its paths made absolute, so it runs from any folder."""
    from flows.config import ConfigError, relocated_config_text

    source = source or Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    if out.exists() and not overwrite:
        fail(f"{out} exists: choose another name or pass --overwrite")
    try:
        text = relocated_config_text(source)
    except ConfigError as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out} (from {source}); run it with: tunegate run --config {out}")


def _stage_store() -> Path:
    return StatePaths.from_env().snapshots


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders to ingest")],
    out: Annotated[Path, typer.Option("--out", help="snapshot folder, or a .jsonl file")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c")] = None,
) -> None:
    """Ingest files into documents; unreadable ones are listed with the reason."""
    from tasks import snapshot
    from tasks.ingest import ingest_to_snapshot

    cfg = _config(config) if config else _default_config()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    try:
        ref = ingest_to_snapshot(paths, cfg.ingest, cfg.dask, _stage_store())
    except (ConnectionError, FileNotFoundError) as exc:  # e.g. a hub dataset offline: one line naming it
        fail(str(exc))
    snapshot.export(ref, out)
    stats = ref.manifest()["stats"]
    for row in (Path(ref.path) / "quarantine.jsonl").read_text().splitlines():
        typer.echo(f"quarantined: {row}", err=True)
    typer.echo(f"{stats['documents']} documents from {stats['inputs']} inputs, {stats['quarantined']} quarantined -> {out}")


def _default_config():
    from flows.config import DEFAULT_CONFIG, PipelineConfig

    return _config(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else PipelineConfig()


def _open(path: Path):
    from tasks import snapshot

    try:
        return snapshot.open_input(path, _stage_store())
    except (ValueError, OSError) as exc:
        fail(str(exc))


@app.command()
def dedup(
    inp: Annotated[Path, typer.Argument(metavar="IN", help="snapshot folder or .jsonl")],
    out: Annotated[Path, typer.Option("--out", help="snapshot folder, or a .jsonl file")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c")] = None,
) -> None:
    """Remove exact and near duplicates."""
    from tasks import snapshot
    from tasks.dedup import dedup_snapshot

    cfg = _config(config) if config else _default_config()
    ref = dedup_snapshot(_open(inp), cfg.dedup, _stage_store())
    snapshot.export(ref, out)
    s = ref.manifest()["stats"]
    typer.echo(f"kept {s['kept']}, removed {s['exact_duplicates']} exact and {s['near_duplicates']} near duplicates -> {out}")


@app.command()
def scrub(
    inp: Annotated[Path, typer.Argument(metavar="IN", help="snapshot folder or .jsonl")],
    out: Annotated[Path, typer.Option("--out", help="snapshot folder, or a .jsonl file")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c")] = None,
) -> None:
    """Scrub PII with Presidio."""
    from tasks import snapshot
    from tasks.pii import scrub_snapshot

    cfg = _config(config) if config else _default_config()
    ref = scrub_snapshot(_open(inp), cfg.pii, cfg.dask, _stage_store())
    snapshot.export(ref, out)
    s = ref.manifest()["stats"]
    found = ", ".join(f"{k} {v}" for k, v in s["pii_entities"].items()) or "none"
    typer.echo(f"{ref.rows} documents, PII scrubbed: {found} -> {out}")


def _registry(name: Optional[str]) -> tuple[str, str]:
    state = StatePaths.from_env()
    cfg = _default_config()
    uri = cfg.registry.tracking_uri or state.mlflow_uri()
    return uri, name or cfg.registry.model_name


@app.command()
def models(name: Annotated[Optional[str], typer.Option("--name", help="registered model; default: all")] = None) -> None:
    """Registered versions with their aliases, status and key metrics."""
    from rich.console import Console

    from tasks import registry

    uri, _ = _registry(None)
    try:
        versions = registry.list_versions(uri, name)
    except registry.RegistryUnreachable as exc:
        fail(str(exc))
    if not versions:
        typer.echo("no registered models yet")
        return
    console = Console()  # the terminal's width; 80 columns when there is no terminal
    for renderable in model_tables(versions):
        console.print(renderable)


def model_tables(versions) -> list:
    """One table per registered model (version, aliases, status, key metrics, run), narrow enough for 80
    columns; metrics measured on other held-out data than the champion's are marked as not comparable."""
    from rich.table import Table

    keys = {"rougeL": "ROUGE-L", "bits_per_byte": "bits/B", "pii_leaked": "PII"}
    out: list = []
    for model_name in dict.fromkeys(v.name for v in versions):
        mine = [v for v in versions if v.name == model_name]
        champion = next((v for v in mine if "champion" in v.aliases), None)
        table = Table("v", "aliases", "status", *keys.values(), title=model_name, title_justify="left")
        table.add_column("run", overflow="fold")
        other = False
        for v in mine:
            differs = bool(champion and champion.eval_data and v.eval_data != champion.eval_data)
            other |= differs
            cells = ["" if v.metrics.get(k) is None else f"{v.metrics[k]:.4g}{'*' if differs else ''}" for k in keys]
            table.add_row(v.version, " ".join("@" + a for a in v.aliases), v.status or "", *cells, v.run_id or "")
        out.append(table)
        if other:
            out.append("* measured on other held-out data than @champion's: not comparable with it")
    return out


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="model version to make @champion")],
    name: Annotated[Optional[str], typer.Option("--name", help="registered model name")] = None,
    force: Annotated[bool, typer.Option("--force", help="promote a version its run blocked")] = False,
) -> None:
    """Move @champion to VERSION by hand (the previous champion is remembered for rollback). A version its
    run blocked (a failed contract or gate) is refused unless --force."""
    from mlflow.exceptions import MlflowException

    from tasks import registry

    uri, model = _registry(name)
    try:
        if not force:
            why = registry.blocked_reason(uri, model, version)
            if why is not None:
                fail(f"{model} v{version} was blocked by its run: {why}; promote it anyway with --force")
        before, after = registry.promote(uri, model, version)
    except MlflowException as exc:
        fail(f"cannot promote {model} v{version}: {exc.message}")
    except registry.RegistryUnreachable as exc:
        fail(str(exc))
    typer.echo(f"{model}: @champion v{before or '-'} -> v{after}")


@app.command()
def rollback(name: Annotated[Optional[str], typer.Option("--name", help="registered model name")] = None) -> None:
    """Move @champion back to the previous champion."""
    from tasks import registry

    uri, model = _registry(name)
    try:
        before, after = registry.rollback(uri, model)
    except (LookupError, registry.RegistryUnreachable) as exc:
        fail(str(exc))
    typer.echo(f"{model}: @champion v{before or '-'} -> v{after} (rolled back)")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="text to continue")],
    model: Annotated[str, typer.Option("--model", help="an alias (champion, challenger) or a version number")] = "champion",
    name: Annotated[Optional[str], typer.Option("--name", help="registered model name")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096)] = 48,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    seed: int = 0,
) -> None:
    """Generate with a registered model, as `mlflow.pyfunc.load_model("models:/NAME@champion")` does."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks import registry

    uri, model_name = _registry(name)
    ref = f"models:/{model_name}/{model}" if model.isdigit() else f"models:/{model_name}@{model}"
    try:
        registry.client(uri)  # fails at once, naming the URI, when a tracking server does not answer
        with registry.tracking(uri):
            loaded = mlflow.pyfunc.load_model(ref)
    except MlflowException as exc:
        fail(f"cannot load {ref}: {exc.message}")
    except registry.RegistryUnreachable as exc:
        fail(str(exc))
    params = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
    typer.echo(loaded.predict([prompt], params=params)[0])


@app.command()
def merge(
    out: Annotated[Path, typer.Argument(help="folder for the merged Hugging Face model")],
    model: Annotated[str, typer.Option("--model", help="an alias (champion, challenger) or a version number")] = "champion",
    name: Annotated[Optional[str], typer.Option("--name", help="registered model name")] = None,
) -> None:
    """Merge a registered model's LoRA adapter into its base: one plain transformers folder (with tokenizer)."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from tasks import registry
    from tasks.merge import MergeError, merge_adapter

    uri, model_name = _registry(name)
    with tempfile.TemporaryDirectory(prefix="tunegate-merge-") as tmp:
        try:
            parts = registry.model_artifacts(uri, model_name, model, Path(tmp))
        except MlflowException as exc:
            fail(f"cannot load {model_name} {model}: {exc.message}")
        except registry.RegistryUnreachable as exc:
            fail(str(exc))
        if parts is None:
            fail(f"{model_name} has no version '{model}'")
        try:
            merge_adapter(parts["base"], parts["adapter"], out)
        except MergeError as exc:
            fail(str(exc))
    typer.echo(f"merged {model_name} v{parts['version']} (base + adapter) -> {out}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()


# Operations commands (deploy, serve, server) live in their own module and register on `app`.
from flows import ops_cli  # noqa: E402,F401
