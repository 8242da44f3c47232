"""Servers and commands a test starts for real: each in its own process group (killed with it), its output in a
log file; waiting on a condition fails with the log's tail; the ports, health checks and a Prefect client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT

SERVER_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    """A process in its own process group (so it and everything it starts can be killed together)."""
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 15) -> None:
    """Signal the process group, then SIGKILL whatever is left of it."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None,
             every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited ({proc.returncode}):\n{tail(log) if log else ''}")
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tail(log) if log else ''}")


def healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def prefect_server(home: Path, **settings: str):
    """`prefect server start` on a free port with its own PREFECT_HOME (``home``) and ``settings`` (environment
    variables, e.g. PREFECT_SERVER_API_AUTH_STRING); yields its API URL."""
    port = free_port()
    env = {**os.environ, **SERVER_ENV, "PREFECT_HOME": str(home), **settings}
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    proc = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 env, log, cwd=home)
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}/api/health"), 120, "the Prefect server", proc, log)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        stop(proc)


@contextmanager
def client(api_url: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as c:
            yield c


def start_mlflow(tmp: Path, port: int, log: Path, *app: str, **settings: str) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port with its store in ``tmp`` (the same store on every restart); ``app``: e.g.
    "--app-name", "basic-auth", with its ``settings`` (environment variables)."""
    env = {**os.environ, **SERVER_ENV, **settings}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(key, None)
    return start([str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
                  "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", *app,
                  "--artifacts-destination", str(tmp / "mlartifacts"), "--serve-artifacts"], env, log, cwd=tmp)
