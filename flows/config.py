"""PipelineConfig: one typed model, composed of the settings sections that the task modules own.

Loaded from YAML; a wrong type, an out-of-range value or an unknown key fails at once with a message
that names the field. Relative paths in a config file are resolved against the file's folder (a file tunegate
ships, such as ``data_contracts/raw.json``, that is not there is the project's own copy: tasks.core.paths).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.core.usage import CostSettings
from tasks.train.canaries import CanarySettings
from tasks.data.clean import CleanSettings
from tasks.data.contracts import ContractSettings
from tasks.train.dataset import SplitSettings
from tasks.data.dedup.settings import DedupSettings
from tasks.evaluate.evaluate import EvalSettings
from tasks.core.executor import DaskSettings
from tasks.evaluate.gates import GateSettings
from tasks.data.ingest.ingest import IngestSettings
from tasks.train.model import ModelSettings, looks_like_path
from tasks.data.pii.settings import PiiSettings
from tasks.registry.settings import RegistrySettings, RetentionSettings
from tasks.serve.settings import ServingSettings
from tasks.train.tokenizer import TokenizerSettings
from tasks.train.train import TrainSettings
from tasks.core.paths import DEMO_CONFIG, resolve_relative
from tasks.core.yaml_model import describe_errors, load_yaml_model

DEFAULT_CONFIG = Path("configs/demo.yaml")  # in the working directory; else the project's own (DEMO_CONFIG)


class DataSettings(BaseModel):
    """Where the raw documents are (and whether the gateway's corrections join them)."""

    model_config = ConfigDict(extra="forbid")

    paths: list[Path] = Field(default_factory=list, description="files or folders to ingest")
    corrections: bool = Field(
        False, description="also train on the corrections users sent the gateway for this model (registry.model_name): "
                           "the accepted corrections of its traffic store are exported into the run's folder as "
                           "instruction pairs (the user's prompt, the corrected answer) and ingested with the data "
                           "paths, through dedup, PII scrubbing and the contracts; their lineage goes to the report "
                           "and the registered version's tags")
    corrections_min_rating: float = Field(
        0.0, ge=-1.0, le=1.0, description="with corrections: feedback rated below this is left out (feedback without "
                                          "a rating is kept); the latest feedback on an answer counts")
    dataset: str = Field(
        "corpus", pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$",
        description="the dataset this model is trained on (letters, digits, '_' and '-'): a retrain adds its data to "
                    "what the @champion of the same dataset was trained on (history), and the drift monitor names it")
    history: Literal["cumulative", "replace"] = Field(
        "cumulative", description="cumulative: train on the @champion's training data plus the new documents "
                                  "(deduplicated across both, within the retention window); replace: the new data alone")
    retention_days: float | None = Field(
        None, gt=0, description="cumulative: keep the champion's documents ingested at most this many days before the "
                                "newest new document (unset: all)")
    retention_documents: int | None = Field(
        None, ge=1, description="cumulative: keep at most this many of the champion's documents, the newest (unset: all)")


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
    canaries: CanarySettings = CanarySettings()
    evaluate: EvalSettings = EvalSettings()
    gates: GateSettings = GateSettings()
    registry: RegistrySettings = RegistrySettings()
    retention: RetentionSettings = RetentionSettings()
    cost: CostSettings = CostSettings()
    serving: ServingSettings = ServingSettings()
    dask: DaskSettings = DaskSettings()


class ConfigError(ValueError):
    """A config problem, worded as one line naming the file and field."""


def describe_validation_error(exc: ValidationError, source: str) -> str:
    return f"invalid config {source}: {describe_errors(exc)}"


def _resolve(base: Path, value: Path | None) -> Path | None:
    if value is None or value.is_absolute():
        return value
    return resolve_relative(base, value)


def resolve_paths(config: PipelineConfig, base: Path) -> PipelineConfig:
    config.data.paths = [_resolve(base, p) for p in config.data.paths]
    config.contract.raw = _resolve(base, config.contract.raw)
    config.contract.curated = _resolve(base, config.contract.curated)
    config.contract.training = _resolve(base, config.contract.training)
    config.gates.file = _resolve(base, config.gates.file)
    config.serving.rollout_file = _resolve(base, config.serving.rollout_file)
    for field in ("prompts_file", "pii_probe_prompts", "toxicity_words"):
        setattr(config.evaluate, field, _resolve(base, getattr(config.evaluate, field)))
    config.evaluate.extraction.planted_file = _resolve(base, config.evaluate.extraction.planted_file)
    config.train.deepspeed_config = _resolve(base, config.train.deepspeed_config)
    config.train.hostfile = _resolve(base, config.train.hostfile)
    spec = config.model.base_model
    if spec:  # a local folder or .gguf file (relative to this file), or else a hub id
        path = Path(spec).expanduser()
        if not path.is_absolute() and ((base / path).exists() or looks_like_path(spec)):
            path = (base / path).resolve()
        if path.is_absolute():
            config.model.base_model = str(path)
    return config


def default_config_path() -> Path | None:
    """configs/demo.yaml of the working directory, else the project's own (the checkout's, or the copy an
    installed wheel carries); None when neither is there."""
    return next((p for p in (DEFAULT_CONFIG, DEMO_CONFIG) if p.is_file()), None)


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """The pipeline config in ``path`` (default: ``default_config_path``); raises ConfigError naming the problem."""
    path = Path(path) if path else default_config_path() or DEFAULT_CONFIG
    config = load_yaml_model(path, PipelineConfig, "config", error=ConfigError, missing=ConfigError)
    config = resolve_paths(config, path.parent.resolve())
    check_gates_file(config)
    return config


def load_config_or_default(path: str | Path | None = None) -> PipelineConfig:
    """The config in ``path``; without one, the default config (``default_config_path``), or every setting's
    default when there is none. Raises ConfigError naming the problem."""
    if path:
        return load_config(path)
    found = default_config_path()
    return load_config(found) if found else PipelineConfig()


# a relative path in a config's YAML: a value (or list item) starting with ./ or ../
_RELATIVE_PATH = re.compile(r"(?<=[\s\[,])(\.\.?/[^\s\],#'\"]*)")


def relocated_config_text(source: Path) -> str:
    """The text of the config ``source`` with every relative path made absolute (comments kept), so the file
    works wherever it is copied to and whichever folder a run starts in. Checked: it loads to the same
    config as ``source``; if a path could not be rewritten in place, every setting is written out instead."""
    source = Path(source).resolve()
    text = source.read_text()
    relocated = _RELATIVE_PATH.sub(lambda m: str((source.parent / m.group(1)).resolve()), text)
    want = load_config(source).model_dump(mode="json")
    # a path the pattern missed would resolve against this folder, which does not exist, and differ
    got = resolve_paths(PipelineConfig.model_validate(yaml.safe_load(relocated) or {}), Path("/nonexistent-base"))
    if got.model_dump(mode="json") == want:
        return relocated
    return yaml.safe_dump(want, sort_keys=False)


def check_gates_file(config: PipelineConfig) -> None:
    """A gates file that is there must load: a run with a malformed one fails before any data work
    (ConfigError naming the file and the field). A missing one is reported by `tunegate run`; the retrain
    flow checks both again when it starts (a config built in code comes in without load_config)."""
    from tasks.evaluate.gates import load_gates

    if not Path(config.gates.file).is_file():
        return
    try:
        load_gates(config.gates.file)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"gates.file: {exc}") from exc
