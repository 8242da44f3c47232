"""The ``serving`` section of the config: what `tunegate gateway` reads at start (the rollout file is reread
by itself whenever it changes)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tasks.serve.guardrails import GuardrailSettings
from tasks.serve.traffic import TrafficSettings


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rollout_file: Path = Field(Path("data_contracts/rollout.yaml"), description="blue-green, canary or shadow, "
                               "and their settings (data_contracts/rollout.yaml); reread when it changes")
    scrub_answers: bool = Field(True, description="pass every answer through the PII scrubber (the pii section's "
                                "settings) before it leaves the gateway")
    guardrails: GuardrailSettings = GuardrailSettings()
    traffic: TrafficSettings = TrafficSettings()
