"""Where models are registered (the registered model's name and the MLflow tracking URI), and what `tunegate gc`
keeps of the state folder around them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RegistrySettings(BaseModel):
    """Where models are registered."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field("tunegate-demo", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default MLFLOW_TRACKING_URI or sqlite in the state folder")


class RetentionSettings(BaseModel):
    """What `tunegate gc` keeps (the config's ``retention`` section)."""

    model_config = ConfigDict(extra="forbid")

    keep_runs: int = Field(5, ge=1, description="the newest runs kept whole: checkpoints, training blocks, snapshots")
    keep_versions: int = Field(5, ge=1, description="per registered model, the newest versions (and the last champions) "
                                                    "whose training snapshots are kept; versions with an alias always")
    delete_versions: bool = Field(True, description="delete the registered versions none of these keeps (no alias, not "
                                  "among the newest versions or champions, not a kept run's) with their model's "
                                  "artifacts; their MLflow runs (metrics, report) stay. Off: only their snapshots go")
    keep_train_cache: int = Field(5, ge=0, description="finished trainings kept for train.reuse, the newest")
    keep_eval_cache: int = Field(200, ge=0, description="evaluation-cache entries kept, the newest")
