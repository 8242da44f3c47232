"""The ``tunegate`` command: the Typer app, its exit codes and what every command shares.

Exit codes: 0 done (``run``: promoted), 3 blocked by a contract or a gate, 1 an error (one line naming
the file, field or setting at fault), 2 wrong usage. The commands register on ``app`` from their modules
(flows/cli/pipeline.py, stages.py, models.py, operations.py); nothing outside this package imports them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from tasks.core.state import StatePaths

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Retrain language models behind data contracts and evaluation gates.")
EXIT_BLOCKED, EXIT_ERROR = 3, 1


def prefect_home(state: StatePaths, verbose: bool = True) -> None:
    """Prefect's ephemeral API keeps its SQLite database in the state folder unless told otherwise; its logs
    have no colour codes when they go to a run's log file."""
    state.prefect_home.mkdir(parents=True, exist_ok=True)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_COLORS", "false")
    os.environ.setdefault("PREFECT_HOME", str(state.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tunegate")  # stage progress in the run's logs


def fail(message: str, code: int = EXIT_ERROR) -> None:
    typer.echo(f"error: {with_access_hint(message)}", err=True)
    raise typer.Exit(code)


def with_access_hint(message: str) -> str:
    """A server's refusal of missing or wrong credentials, with the settings that carry them (README "Access")."""
    if "error code 401" in message or "error code 403" in message:  # MLflow's REST client
        return f"{message} (MLflow's credentials come from MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
    if "401 Unauthorized" in message:  # Prefect's client
        return f"{message} (Prefect's API credentials come from PREFECT_API_AUTH_STRING)"
    return message


def config_or_fail(path: Optional[Path]):
    from flows.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc))


def default_config():
    """configs/demo.yaml of the working directory, else the project's own, else every setting's default."""
    from flows.config import ConfigError, load_config_or_default

    try:
        return load_config_or_default()
    except ConfigError as exc:
        fail(str(exc))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
