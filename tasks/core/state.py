"""The state folder: where snapshots, tokenizers, base models, runs and the MLflow database live.

Several runs may share one state folder at once (two `tunegate run` started together, a served deployment
beside a manual run). What they must not do at the same time is done under ``StatePaths.lock(name)``, an
exclusive file lock in ``<home>/locks/``: the kernel releases it when its holder dies, even by SIGKILL.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


IN_USE_LOCK = "in-use"  # held shared by every run while it works, exclusively by `tunegate gc`
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_id(run_id: str) -> str:
    """``run_id`` when it can name a folder inside ``runs/`` (letters, digits, '.', '_', '-'; no '..', no '/'),
    else ValueError saying so."""
    if not RUN_ID.match(run_id) or ".." in run_id:
        raise ValueError(f"run id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 128, no '..'): it names "
                         "a folder inside the state folder's runs/")
    return run_id


def new_run_id() -> str:
    """A run folder's name: UTC time, then six random hex digits."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class StatePaths:
    home: Path

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> "StatePaths":
        return cls(Path(home or os.environ.get("TUNEGATE_HOME") or ".tunegate").absolute())

    @property
    def snapshots(self) -> Path:
        return self.home / "snapshots"

    @property
    def tokenizers(self) -> Path:
        return self.home / "tokenizers"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    @property
    def torch_extensions(self) -> Path:
        return self.home / "torch_extensions"

    @property
    def train_cache(self) -> Path:
        """Finished trainings, by job key (train.reuse)."""
        return self.home / "train-cache"

    @property
    def eval_cache(self) -> Path:
        """Evaluations, by model and inputs."""
        return self.home / "eval-cache"

    @property
    def evalsets(self) -> Path:
        """The frozen evaluation set of each dataset, one folder per dataset (tasks/evaluate/frozen_set.py)."""
        return self.home / "evalsets"

    @property
    def drift(self) -> Path:
        """Drift reports, one folder per monitor run, and the ledger of events emitted."""
        return self.home / "drift"

    @property
    def prefect_home(self) -> Path:
        """PREFECT_HOME of the temporary API and of `tunegate server`: Prefect's database."""
        return self.home / "prefect"

    @property
    def logs(self) -> Path:
        """Logs of the servers `tunegate server` starts."""
        return self.home / "logs"

    @property
    def serving(self) -> Path:
        """The registered versions the gateway downloaded, by model name and version."""
        return self.home / "serving"

    @property
    def traffic(self) -> Path:
        """The gateway's traffic store (requests, answers, feedback), by model name."""
        return self.home / "traffic"

    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    def run_dir(self, run_id: str) -> Path:
        """The run's folder; ValueError for an id that is not a plain folder name (``../x``)."""
        return self.runs / check_run_id(run_id)

    def mlflow_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db()}"

    def mlflow_artifacts(self) -> str:
        return (self.home / "mlartifacts").as_uri()

    @property
    def locks(self) -> Path:
        return self.home / "locks"

    @contextmanager
    def lock(self, name: str, timeout_s: float = 6 * 3600, poll_s: float = 0.2, shared: bool = False) -> Iterator[float]:
        """Hold the exclusive lock ``<home>/locks/<name>.lock`` for the block; yields the seconds waited.
        ``shared``: many holders at once, none while it is held exclusively (runs share ``in-use``; gc excludes).

        Each hold is appended to ``<name>.log`` (pid, acquired, released: Unix seconds), so it can be shown
        afterwards that holders took turns. Raises TimeoutError naming the lock file after ``timeout_s``.
        """
        self.locks.mkdir(parents=True, exist_ok=True)
        path = self.locks / f"{name}.lock"
        start = time.monotonic()
        with open(path, "a+") as fh:
            while True:
                try:
                    fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - start > timeout_s:
                        raise TimeoutError(f"{path} is held by another run (pid {_holder(path)}) for over "
                                           f"{timeout_s:.0f} s") from None
                    time.sleep(poll_s)
            acquired = time.time()
            if not shared:  # the holder's pid, for the message above
                fh.seek(0)
                fh.truncate()
                fh.write(f"{os.getpid()}\n")
                fh.flush()
            try:
                yield time.monotonic() - start
            finally:
                entry = {"pid": os.getpid(), "acquired": acquired, "released": time.time()}
                with open(self.locks / f"{name}.log", "a") as journal:
                    journal.write(json.dumps(entry) + "\n")
                fcntl.flock(fh, fcntl.LOCK_UN)

    def lock_holds(self, name: str) -> list[dict]:
        """The holds of lock ``name`` recorded so far, oldest first."""
        journal = self.locks / f"{name}.log"
        if not journal.is_file():
            return []
        return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"
