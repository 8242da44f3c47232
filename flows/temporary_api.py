"""Prefect's temporary API server, started at once in the background.

Without ``PREFECT_API_URL`` a flow starts a temporary Prefect server itself, at its first call: a second
process that needs about ten seconds on two cores to import and start, after the command has spent as long
importing the pipeline. Started here, first thing, from the same command Prefect uses (nothing of Prefect
is imported here), the server starts while the pipeline imports; ``PREFECT_API_URL`` then points the
flow at it, the server's messages go to ``temporary-server.log`` beside its database, and the server stops
when the command exits.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


TEMPORARY_FLAG = "TUNEGATE_TEMPORARY_API"


class TemporaryApiError(RuntimeError):
    pass


def in_use() -> bool:
    """True when PREFECT_API_URL is this command's temporary server (no other run talks to it)."""
    return bool(os.environ.get(TEMPORARY_FLAG)) and os.environ.get(TEMPORARY_FLAG) == os.environ.get("PREFECT_API_URL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(timeout: float | None = None) -> Callable[[], None]:
    """Start the server (its SQLite database under PREFECT_HOME) and return the function that waits until it
    answers (``timeout``: Prefect's own PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, 90 s by default);
    does nothing when PREFECT_API_URL names a server already."""
    if os.environ.get("PREFECT_API_URL"):
        return lambda: None
    if timeout is None:
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 90)
    port = _free_port()
    package = Path(importlib.util.find_spec("prefect").origin).parent
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(package.parent), "--factory",
               "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "error", "--lifespan", "on"]

    # the server's own messages go to a log file beside its database, not into the run's terminal
    log = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect") / "temporary-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)

    def launch() -> subprocess.Popen:
        with open(log, "ab") as out:
            proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        atexit.register(_stop, proc)
        return proc

    server = [launch()]
    url = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_URL"] = url  # before Prefect is imported: its settings are read once, at import
    os.environ[TEMPORARY_FLAG] = url  # this command's own server: what is coordinated through it is this run's alone

    def ready() -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = server[0]
            if proc.poll() == 3 and time.monotonic() + 1 < deadline:
                # uvicorn's "startup failed": as Prefect does, start again (two runs starting on one new
                # state folder: the one that does not migrate the database first fails once)
                time.sleep(1)
                server[0] = launch()
                continue
            if proc.poll() is not None:
                lines = log.read_text(errors="replace").strip().splitlines()
                raise TemporaryApiError(f"the temporary Prefect server exited ({proc.returncode}): "
                                        f"{lines[-1] if lines else 'no output'} (log: {log})")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TemporaryApiError(f"the temporary Prefect server did not answer at {url} within {timeout:.0f} s")

    return ready


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
