"""The rollout file (``data_contracts/rollout.yaml``): how the gateway splits traffic between @champion and
@challenger, reread whenever it changes, so a strategy is switched without a restart.

- ``blue-green``: every request on @champion; an alias move switches all traffic at once.
- ``canary``: a share of requests on @challenger, chosen by a hash of the request's key (sticky, and the same
  on every replica), stepped up on a schedule while the challenger's live guards hold (tasks/serve/canary.py).
- ``shadow``: users get @champion's answer; @challenger answers a copy of each request off the response path
  and the pair's divergence is measured (tasks/serve/shadow.py).

A changed file that does not validate is refused with a log line naming the field and counted
(``tunegate_gateway_rollout_file_errors``); the file in force stays in force.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.core.yaml_model import load_yaml_model

log = logging.getLogger("tunegate.gateway")
Strategy = Literal["blue-green", "canary", "shadow"]


class CanaryGuards(BaseModel):
    """Live checks on the challenger, against the champion over the same recent window. One that fails rolls the
    canary back: the challenger's share goes to 0 and the reason is recorded on its registry version."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate_increase: float = Field(0.02, ge=0, le=1, description="challenger's error rate minus the "
                                           "champion's")
    max_latency_p95_ratio: float = Field(1.5, gt=0, description="challenger's p95 latency over the champion's")
    max_guardrail_rate_increase: float = Field(0.05, ge=0, le=1, description="share of answers a guardrail "
                                               "changed (PII scrubbed), challenger's minus the champion's")
    window: int = Field(200, ge=10, description="the most recent answers per version the guards look at")


class CanarySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[float] = Field(default_factory=lambda: [0.05, 0.2, 0.5, 1.0], min_length=1,
                               description="the challenger's share at each step, increasing, each in (0, 1]")
    step_seconds: float = Field(600, gt=0, description="how long each step lasts at least")
    min_requests: int = Field(50, ge=1, description="challenger answers a step needs before it is judged and "
                              "stepped past (and before any guard can fail it)")
    promote: bool = Field(True, description="after the last step holds, move @champion to the challenger "
                          "(as `tunegate promote` does)")
    guards: CanaryGuards = CanaryGuards()

    @field_validator("steps")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(not 0 < s <= 1 for s in v):
            raise ValueError("each step is a share in (0, 1]")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("steps must increase")
        return v


class ShadowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    share: float = Field(1.0, gt=0, le=1, description="share of requests copied to the challenger (by key hash)")
    queue: int = Field(64, ge=1, description="copies waiting for the challenger; more are dropped and counted")


class RolloutSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(1, ge=1, description="the file's own version: raise it with each change you mean")
    strategy: Strategy = "blue-green"
    key_header: str = Field("x-tunegate-session", min_length=1, description="the request header whose value "
                            "keeps a user or session on one version (else the body's `user`, else none)")
    canary: CanarySettings = CanarySettings()
    shadow: ShadowSettings = ShadowSettings()


def load_rollout(path: str | Path) -> RolloutSettings:
    return load_yaml_model(path, RolloutSettings, "rollout file")


def bucket(key: str) -> float:
    """A number in [0, 1) for ``key``: the same on every replica and every run (sha256, not Python's hash)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


class RolloutFile:
    """The settings in force, from ``path`` (or the defaults, blue-green, when there is no file); ``check()``
    rereads the file when its content changed. ``listeners`` are called with (settings, digest) on each change."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.settings, self.digest = RolloutSettings(), "defaults"
        self.listeners: list = []
        self.errors: list[str] = []  # the refused changes, newest last
        self._seen: bytes | None = None
        if path is not None:
            self.settings, self.digest = load_rollout(path), self._digest(path.read_bytes())
            self._seen = path.read_bytes()

    @staticmethod
    def _digest(raw: bytes) -> str:
        return hashlib.sha256(raw).hexdigest()[:12]

    def check(self) -> bool:
        """Reread the file if it changed; True when new settings came into force."""
        if self.path is None:
            return False
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            return self._refuse(raw=None, why=f"rollout file {self.path}: cannot be read ({exc})")
        if raw == self._seen:
            return False
        try:
            settings = load_rollout(self.path)
        except (ValueError, FileNotFoundError) as exc:
            return self._refuse(raw, str(exc))
        with self.lock:
            self._seen, self.settings, self.digest = raw, settings, self._digest(raw)
        log.info("rollout file %s (v%d, %s): strategy %s", self.path, settings.version, self.digest,
                 settings.strategy)
        for listener in self.listeners:
            listener(settings, self.digest)
        return True

    def _refuse(self, raw: bytes | None, why: str) -> bool:
        self._seen = raw
        self.errors.append(why)
        log.error("%s; the rollout in force (%s) stays", why, self.digest)
        for listener in self.listeners:
            listener(None, why)
        return False
