"""What answers a request, apart from HTTP: the versions served, the rollout in force and its canary controller,
guardrails on the way in and the PII scrubber on the way out, shadow copies, the traffic store and the metrics.

``route`` picks the version: ``NAME@champion`` and ``NAME@challenger`` are pinned to that alias; a bare ``NAME``
follows the rollout file (blue-green: @champion; canary: @challenger for the share of keys the controller gives
it; shadow: @champion, and a copy to @challenger). ``follow`` is the registry thread: it rereads the rollout
file, follows the aliases and lets the canary controller step, roll back or promote.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tasks.serve.answer_scrub import AnswerScrubber
from tasks.serve.canary import CanaryController, CanaryRegistry, Outcome
from tasks.serve.guardrails import GuardrailSettings
from tasks.serve.metrics import GatewayMetrics
from tasks.serve.rollout import RolloutFile, RolloutSettings, bucket
from tasks.serve.shadow import ShadowRunner
from tasks.serve.traffic import TrafficSettings, TrafficStore
from tasks.serve.versions import ServedVersions, Version

log = logging.getLogger("tunegate.gateway")
FAULTS_ENV = "TUNEGATE_GATEWAY_FAULTS"


class Unavailable(Exception):
    """No version behind the alias a request asked for (yet)."""


class Route(NamedTuple):
    alias: str
    version: Version
    strategy: str  # the rollout strategy that chose it, or "pinned" for NAME@alias
    shadow: bool  # also send a copy to @challenger


@dataclass
class Faults:
    """A test hook: ``TUNEGATE_GATEWAY_FAULTS='{"2": {"delay_s": 0.5, "error_rate": 0.3}}'`` makes version 2
    slower or failing, to see a canary's guards at work. Unset in production."""

    by_version: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Faults":
        raw = os.environ.get(FAULTS_ENV)
        return cls({str(k): v for k, v in json.loads(raw).items()}) if raw else cls()

    def inject(self, version: str) -> None:
        fault = self.by_version.get(version)
        if not fault:
            return
        time.sleep(float(fault.get("delay_s", 0)))
        if random.random() < float(fault.get("error_rate", 0)):
            raise RuntimeError(f"fault injected into v{version} ({FAULTS_ENV})")


class Gateway:
    def __init__(self, served: ServedVersions, rollout: RolloutFile, scrubber: AnswerScrubber,
                 traffic_folder: Path, traffic: TrafficSettings | None = None,
                 guardrails: GuardrailSettings | None = None, metrics: GatewayMetrics | None = None) -> None:
        self.served, self.rollout, self.scrubber = served, rollout, scrubber
        self.guardrails = guardrails or GuardrailSettings()
        self.metrics = metrics or GatewayMetrics()
        self.faults = Faults.from_env()
        self.wake = threading.Event()  # set by a promotion event, and to stop: the aliases are read at once
        self.canary = CanaryController(CanaryRegistry(served.tracking_uri, served.model_name), self.metrics)
        self.traffic = TrafficStore(traffic_folder, traffic or TrafficSettings(),
                                    lambda texts: scrubber.scrub(texts)[0], self.metrics)
        self.shadow = ShadowRunner(served, scrubber, self.traffic, self.metrics, rollout.settings.shadow.queue)
        served.listeners.append(self.metrics.alias_changed)
        rollout.listeners.append(self._rollout_changed)
        self._rollout_changed(rollout.settings, rollout.digest)

    # ------------------------------------------------------------------------------------ routing

    def route(self, requested: str, key: str | None) -> Route:
        name, _, alias = requested.partition("@")
        if name != self.served.model_name:
            raise LookupError(f"model {requested!r} is not served here; this gateway serves "
                              f"{self.served.model_name!r}")
        if alias and alias not in ("champion", "challenger"):
            raise LookupError(f"model {requested!r}: ask for {name}, {name}@champion or {name}@challenger")
        settings = self.rollout.settings
        champion, challenger = self.served.version_for("champion"), self.served.version_for("challenger")
        two = champion is not None and challenger is not None and champion.number != challenger.number
        if alias:
            chosen, strategy, shadow = alias, "pinned", False
        elif settings.strategy == "canary" and two and self._canary_of(challenger) and self.canary.takes(key):
            chosen, strategy, shadow = "challenger", "canary", False
        else:
            share = settings.shadow.share
            draw = bucket(f"shadow:{key}") if key else random.random()
            chosen, strategy = "champion", settings.strategy
            shadow = settings.strategy == "shadow" and two and draw < share
        version = challenger if chosen == "challenger" else champion
        if version is None:
            raise Unavailable(f"{name}@{chosen} points to no version (yet)")
        return Route(chosen, version, strategy, shadow)

    def _canary_of(self, challenger: Version) -> bool:
        state = self.canary.state
        return state is not None and state.version == challenger.number

    def record(self, route: Route, ok: bool, seconds: float, guarded: bool) -> None:
        outcome = Outcome(ok, seconds, guarded)
        if route.alias == "champion":
            self.canary.record_champion(outcome)
        else:
            self.canary.record(route.version.number, outcome)

    # ------------------------------------------------------------------------------ the registry thread

    def start(self, poll_seconds: float, stop: threading.Event) -> None:
        """Warm the scrubber, load what the aliases point to (retrying until the registry answers), then follow
        the registry and the rollout file until ``stop``: every ``poll_seconds``, and at once on a promotion
        event when a Prefect server is configured."""
        from tasks.serve.events import follow_promotions, prefect_api_url

        self.traffic.start()
        if prefect_api_url():
            threading.Thread(target=follow_promotions, args=(self.served.model_name, self.wake, stop), daemon=True,
                             name="gateway-events").start()
        try:
            self.scrubber.warm()
        except Exception as exc:  # the first answer says it again, as a failed request
            log.error("the PII scrubber does not load: %s", exc)
        while not stop.is_set():
            try:
                self.served.refresh()
                break
            except Exception as exc:
                log.warning("registry not ready: %s", exc)
                stop.wait(poll_seconds)
        self._sync_canary()
        while not self._wait(poll_seconds, stop):
            self.rollout.check()
            try:
                self.served.refresh()
            except Exception as exc:  # keep serving what is loaded; say why the aliases could not be read
                log.warning("could not follow the registry's aliases: %s", exc)
                continue
            self._sync_canary()

    def _wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait for the next poll or a promotion event; True when the gateway stops."""
        self.wake.wait(seconds)
        self.wake.clear()
        return stop.is_set()

    def _sync_canary(self) -> None:
        aliases = self.served.aliases.versions
        try:
            self.canary.sync(aliases.get("challenger"), aliases.get("champion"),
                             self.rollout.settings.strategy == "canary")
        except Exception as exc:
            log.warning("canary state not synced with the registry: %s", exc)

    def _rollout_changed(self, settings: RolloutSettings | None, digest: str) -> None:
        if settings is None:  # a refused file: counted; the one in force stays
            self.metrics.rollout_errors.inc()
            return
        self.metrics.rollout.clear()
        self.metrics.rollout.labels(settings.strategy, digest).set(1)
        self.canary.configure(settings.canary)
        self.shadow.resize(settings.shadow.queue)
