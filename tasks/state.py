"""The state folder: where snapshots, tokenizers, base models, runs and the MLflow database live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def mlflow_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.home / 'mlflow.db'}"

    def mlflow_artifacts(self) -> str:
        return (self.home / "mlartifacts").as_uri()
