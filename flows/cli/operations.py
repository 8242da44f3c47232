"""`tunegate` operations commands (deploy, serve, server, drift), registered on the main command.

  tunegate server   Prefect server + MLflow UI on 127.0.0.1, state in $TUNEGATE_HOME; Ctrl-C stops both
  tunegate deploy   registers prefect.yaml's deployments against the server in PREFECT_API_URL
  tunegate serve    serves retrain + drift-monitor from this process (schedules, drift trigger), no worker
  tunegate drift    runs the drift monitor once on a data drop, or (--traffic) on the gateway's prompts
"""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, config_or_fail, default_config, fail, prefect_home

EXIT_DRIFT = 4  # `tunegate drift` found drift (0: none; 1: an error)
from tasks.core.paths import PREFECT_YAML
from tasks.core.state import StatePaths

HOST = "127.0.0.1"


def _api_url() -> str:
    """PREFECT_API_URL (environment or Prefect profile), or a one-line error."""
    from prefect.settings import get_current_settings

    url = os.environ.get("PREFECT_API_URL") or get_current_settings().api.url
    if not url:
        fail("PREFECT_API_URL is not set: start a server (`tunegate server`) and "
             "export PREFECT_API_URL=http://127.0.0.1:4200/api")
    return str(url).rstrip("/")


def _check_server(url: str) -> None:
    import httpx

    try:
        httpx.get(f"{url}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        fail(f"PREFECT_API_URL={url}: the Prefect server does not answer ({type(exc).__name__}: {exc})")


def _ensure_work_pools(names: list[str]) -> list[str]:
    """Create the process work pools prefect.yaml names when they do not exist; returns those created."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async def ensure() -> list[str]:
        created = []
        async with get_client() as client:
            for name in names:
                try:
                    await client.read_work_pool(name)
                except ObjectNotFound:
                    await client.create_work_pool(WorkPoolCreate(
                        name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
                    created.append(name)
        return created

    return asyncio.run(ensure())


@app.command()
def deploy(
    prefect_file: Annotated[Path, typer.Option("--prefect-file", help="Prefect project file")] = PREFECT_YAML,
) -> None:
    """Register prefect.yaml's deployments (retrain, drift-monitor) with the server in PREFECT_API_URL."""
    from flows.deployments import DeploymentSpecError, load_project, work_pool_names

    url = _api_url()
    try:
        project = load_project(prefect_file)
    except DeploymentSpecError as exc:
        fail(str(exc))
    _check_server(url)
    for name in _ensure_work_pools(work_pool_names(project)):
        typer.echo(f"created process work pool {name}")
    folder = prefect_file.resolve().parent
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_CLI_PROMPT": "false"}
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file.resolve())]
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        fail(f"prefect deploy failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    names = ", ".join(d["name"] for d in project["deployments"])
    pools = work_pool_names(project)
    worker = f"; start a worker: prefect worker start --pool {pools[0]}" if len(pools) == 1 else ""
    typer.echo(f"deployed {names} to {url}{worker}")


@app.command()
def serve(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="pipeline config for retrain and the monitor")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="the drift monitor's dataset name")] = None,
    new_data: Annotated[Optional[str], typer.Option("--new-data", help="the drift monitor's landing path")] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", help="compare with this when there is no @champion")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="flow runs at once in this process")] = None,
) -> None:
    """Serve retrain and drift-monitor from this process, with their schedules and the drift trigger."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tunegate")  # stage progress in the runs' logs
    from flows.config import ConfigError
    from flows.deployments import DeploymentSpecError, runner_deployments

    url = _api_url()
    if config is not None and not config.is_file():
        fail(f"--config: file not found: {config}")
    _check_server(url)
    try:
        deployments = runner_deployments(config.resolve() if config else None, dataset, new_data, reference)
    except (DeploymentSpecError, ConfigError) as exc:
        fail(str(exc))
    from prefect import serve as prefect_serve

    state = StatePaths.from_env()
    os.environ["TUNEGATE_HOME"] = str(state.home)  # the served runs share this state folder
    for d in deployments:
        landing = (d.parameters or {}).get("new_data")
        if d.name == "drift-monitor" and landing and not Path(landing).exists() and not Path(landing).suffix:
            Path(landing).mkdir(parents=True, exist_ok=True)
            typer.echo(f"created the drift monitor's landing folder {landing}: put new data drops there")
        elif d.name == "drift-monitor" and landing:
            typer.echo(f"the drift monitor watches {landing}")
    typer.echo(f"serving {', '.join(d.name for d in deployments)} against {url} (state {state.home}); Ctrl-C stops "
               "(the deployments stay as they are: schedules and the drift trigger are not paused)")
    # Prefect pauses served deployments' schedules on shutdown by default; a stopped `serve` then leaves them
    # paused for the next one and for the UI, so they are left as they were
    prefect_serve(*deployments, limit=limit, print_starting_message=False, pause_on_shutdown=False)


@app.command()
def drift(
    new_data: Annotated[Optional[Path], typer.Argument(help="the new data drop: folder, JSONL file or dataset")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="the dataset's name (the event's resource; "
                                                   "default: the config's data.dataset; with --traffic traffic-MODEL)")] = None,
    reference: Annotated[Optional[Path], typer.Option("--reference", help="compare with this when there is no @champion")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="pipeline config")] = None,
    thresholds: Annotated[Optional[Path], typer.Option("--thresholds", help="drift thresholds YAML")] = None,
    traffic: Annotated[bool, typer.Option("--traffic", help="check the gateway's traffic (prompt drift) instead of "
                                          "a data drop")] = False,
    name: Annotated[Optional[str], typer.Option("--name", help="with --traffic: the registered model whose traffic "
                                                "is checked (default: the config's)")] = None,
    since: Annotated[float, typer.Option("--since", min=0, metavar="HOURS", help="with --traffic: prompts of the "
                                         "last HOURS hours (0: all the traffic store keeps)")] = 24.0,
    min_prompts: Annotated[int, typer.Option("--min-prompts", min=1, help="with --traffic: fewer distinct prompts "
                                             "than this decide nothing")] = 30,
) -> None:
    """Run the drift monitor once on a data drop, or with --traffic on the gateway's prompts; on drift it emits
    tunegate.data.drift (to PREFECT_API_URL when set). Exit status: 0 no drift (or nothing new, too little data,
    no new data), 4 drift (the event emitted now or by the earlier check of the same drop), 1 an error."""
    if traffic and new_data is not None:
        fail("NEW_DATA and --traffic: give one (a data drop, or --traffic for the gateway's prompts)")
    if not traffic and new_data is None:
        fail("NEW_DATA: missing (a data drop: folder, JSONL file or dataset; or --traffic for the gateway's prompts)")
    if not traffic and name is not None:
        fail("--name: only with --traffic")
    for label, p in (("NEW_DATA", new_data), ("--reference", reference), ("--config", config), ("--thresholds", thresholds)):
        if p is not None and not p.exists():
            fail(f"{label}: no such file or folder: {p}")
    if new_data is not None and new_data.is_dir() and not any(f.is_file() for f in new_data.rglob("*")):
        fail(f"NEW_DATA: no input files under {new_data}")  # one line, before any flow starts
    if not traffic and dataset is None:  # the config's dataset: the one its retrains train and are judged on
        dataset = (config_or_fail(config) if config else default_config()).data.dataset
    state = StatePaths.from_env()
    if not os.environ.get("PREFECT_API_URL"):
        prefect_home(state)
    from flows.drift import drift_monitor, prompt_drift

    common = {"reference": str(reference.resolve()) if reference else None,
              "config_file": str(config.resolve()) if config else None,
              "thresholds_file": str(thresholds.resolve()) if thresholds else None, "home": str(state.home)}
    try:
        if traffic:
            rep = prompt_drift(model=name, since_hours=since or None, dataset=dataset, min_prompts=min_prompts, **common)
        else:
            rep = drift_monitor(dataset=dataset, new_data=str(new_data.resolve()), **common)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    except Exception as exc:  # one line and exit 1, never a traceback; the flow run's log has the rest
        fail(f"the drift check failed: {type(exc).__name__}: {exc}")
    dataset = rep["dataset"]
    fired = [c["name"] for c in rep.get("checks") or [] if c["drifted"]]
    where = "" if os.environ.get("PREFECT_API_URL") else " (ephemeral API: no trigger will see it; set PREFECT_API_URL)"
    if rep.get("event"):
        typer.echo(f"drift in {dataset}: {', '.join(fired)}; event {rep['event']['event']} emitted{where} "
                   f"(report: {rep['report']})")
    elif rep["drift"]:  # already reported: no second event
        typer.echo(f"drift in {dataset}: {', '.join(fired)}; {rep.get('note')} (report: {rep['report']})")
    elif rep.get("note"):
        typer.echo(f"{rep['decision']} in {dataset}: {rep['note']}"
                   + (f" (report: {rep['report']})" if rep.get("report") else ""))
    else:
        typer.echo(f"{rep['decision']} in {dataset} (report: {rep['report']})")
    if rep["drift"]:
        raise typer.Exit(EXIT_DRIFT)


# ------------------------------------------------------------------------------------------- server


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


STOP_LIMIT_S = 30  # Ctrl-C on `tunegate server`: the servers get 10 s to stop, then SIGKILL; never more than this


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group, then SIGKILL what is left after 10 s. Children are reaped with os.waitpid, not
    Popen.wait: this also runs from a signal handler, which may have interrupted a Popen.poll holding its lock."""
    alive = {p.pid for p in procs if p.returncode is None}
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in alive:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = {pid for pid in alive if not _reaped(pid)}
            if alive:
                time.sleep(0.1)
        if not alive:
            return


def _reaped(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already
        return True
    return done == pid


def _tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(ln.strip() for ln in path.read_text(errors="replace").splitlines()[-n:] if ln.strip())
    except OSError:
        return ""


@app.command()
def server(
    host: Annotated[str, typer.Option("--host", help="address both servers bind to")] = HOST,
    prefect_port: Annotated[int, typer.Option("--prefect-port", min=1, max=65535)] = 4200,
    mlflow_port: Annotated[int, typer.Option("--mlflow-port", min=1, max=65535)] = 5000,
) -> None:
    """Start the Prefect server and MLflow's UI on the state folder; prints their URLs; Ctrl-C stops both."""
    state = StatePaths.from_env()
    logs = state.logs
    logs.mkdir(parents=True, exist_ok=True)
    state.prefect_home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(state.prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)  # the server is not a client of another server
    # the UI calls the API where this server serves it (without this, the port Prefect defaults to: 4200)
    env.update(PREFECT_UI_API_URL=f"http://{host}:{prefect_port}/api", PREFECT_SERVER_API_HOST=host,
               PREFECT_SERVER_API_PORT=str(prefect_port))
    mlflow_db = f"sqlite:///{state.mlflow_db()}"
    commands = {
        "Prefect": ([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(prefect_port),
                     "--analytics-off"], f"http://{host}:{prefect_port}/api/health", f"http://{host}:{prefect_port}"),
        "MLflow": ([str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", mlflow_db,
                    "--artifacts-destination", state.mlflow_artifacts(), "--host", host, "--port", str(mlflow_port)],
                   f"http://{host}:{mlflow_port}/health", f"http://{host}:{mlflow_port}"),
    }
    procs: dict[str, subprocess.Popen] = {}
    stopping: list[int] = []

    def stop_now(signum, frame):  # Ctrl-C (SIGINT) or SIGTERM: stop both servers and leave, from the handler itself
        if stopping:
            return
        stopping.append(signum)
        typer.echo("stopping the Prefect and MLflow servers")
        # stopping is bounded: past STOP_LIMIT_S every thread's traceback goes to stderr and the process exits
        faulthandler.dump_traceback_later(STOP_LIMIT_S, exit=True)
        _stop(list(procs.values()))
        typer.echo("stopped")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # nothing is left to clean up; interpreter shutdown is not waited for

    signal.signal(signal.SIGINT, stop_now)
    signal.signal(signal.SIGTERM, stop_now)
    try:
        for name, (cmd, _, _) in commands.items():
            log = open(logs / f"{name.lower()}-server.log", "ab")
            procs[name] = subprocess.Popen(cmd, cwd=state.home, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
        for name, (_, health, _) in commands.items():
            if not _wait_http(health, procs[name], timeout=120):
                log = logs / f"{name.lower()}-server.log"
                fail(f"the {name} server did not start: {_tail(log) or 'no output'} (log: {log})")
        typer.echo(f"Prefect UI  {commands['Prefect'][2]}   (export PREFECT_API_URL={commands['Prefect'][2]}/api)")
        typer.echo(f"MLflow UI   {commands['MLflow'][2]}   (registry: {mlflow_db})")
        typer.echo(f"state {state.home}, logs {logs}; Ctrl-C stops both")
        while True:
            for name, p in procs.items():
                if p.poll() is not None:
                    log = logs / f"{name.lower()}-server.log"
                    fail(f"the {name} server stopped (exit {p.returncode}): {_tail(log)} (log: {log})")
            time.sleep(1)
    finally:  # a server that stopped or did not start: stop the other
        _stop(list(procs.values()))
