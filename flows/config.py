"""PipelineConfig: one typed model, composed of the settings sections that the task modules own.

Loaded from YAML; a wrong type, an out-of-range value or an unknown key fails at once with a message
that names the field. Relative paths in a config file are resolved against the file's folder.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.clean import CleanSettings
from tasks.contracts import ContractSettings
from tasks.dataset import SplitSettings
from tasks.dedup import DedupSettings
from tasks.evaluate import EvalSettings
from tasks.executor import DaskSettings
from tasks.gates import GateSettings
from tasks.ingest import IngestSettings
from tasks.model import ModelSettings
from tasks.pii import PiiSettings
from tasks.registry import RegistrySettings
from tasks.tokenizer import TokenizerSettings
from tasks.train import TrainSettings

DEFAULT_CONFIG = Path("configs/demo.yaml")


class DataSettings(BaseModel):
    """Where the raw documents are."""

    model_config = ConfigDict(extra="forbid")

    paths: list[Path] = Field(default_factory=list, description="files or folders to ingest")


class PipelineConfig(BaseModel):
    """Everything one retrain run needs, section by section in pipeline order."""

    model_config = ConfigDict(extra="forbid")

    data: DataSettings = DataSettings()
    ingest: IngestSettings = IngestSettings()
    clean: CleanSettings = CleanSettings()
    dedup: DedupSettings = DedupSettings()
    pii: PiiSettings = PiiSettings()
    contract: ContractSettings = ContractSettings()
    tokenizer: TokenizerSettings = TokenizerSettings()
    model: ModelSettings = ModelSettings()
    split: SplitSettings = SplitSettings()
    train: TrainSettings = TrainSettings()
    evaluate: EvalSettings = EvalSettings()
    gates: GateSettings = GateSettings()
    registry: RegistrySettings = RegistrySettings()
    dask: DaskSettings = DaskSettings()


class ConfigError(ValueError):
    """A config problem, worded as one line naming the file and field."""


def describe_validation_error(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        value = err.get("input")
        shown = f" (got {value!r})" if err["type"] != "extra_forbidden" and not isinstance(value, dict) else ""
        problems.append(f"{field}: {msg}{shown}")
    return f"invalid config {source}: " + "; ".join(problems)


def _resolve(base: Path, value: Path | None) -> Path | None:
    if value is None or value.is_absolute():
        return value
    return (base / value).resolve()


def resolve_paths(config: PipelineConfig, base: Path) -> PipelineConfig:
    config.data.paths = [_resolve(base, p) for p in config.data.paths]
    config.contract.raw = _resolve(base, config.contract.raw)
    config.contract.curated = _resolve(base, config.contract.curated)
    config.contract.training = _resolve(base, config.contract.training)
    config.gates.file = _resolve(base, config.gates.file)
    if config.model.base_model and not Path(config.model.base_model).is_absolute():
        candidate = base / config.model.base_model
        if candidate.exists():  # a local folder; otherwise it may be a hub id
            config.model.base_model = str(candidate.resolve())
    return config


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """The pipeline config in ``path`` (default configs/demo.yaml); raises ConfigError naming the problem."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, not {type(raw).__name__}")
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path))) from exc
    return resolve_paths(config, path.parent.resolve())
