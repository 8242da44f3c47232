"""Where models are registered: the registered model's name and the MLflow tracking URI."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RegistrySettings(BaseModel):
    """Where models are registered."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field("tunegate-demo", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default MLFLOW_TRACKING_URI or sqlite in the state folder")
