"""The canary controller: how much traffic @challenger gets, stepped up while its live guards hold, rolled back
when one fails, and promoted after the last step.

Replicas agree without talking: a request goes to the challenger when ``bucket(challenger:key) < share`` (the
same hash everywhere), and the canary's state lives on the challenger's registry version as tags, which every
gateway reads at each poll:

- ``tunegate.canary.started_at``: when the canary began (the first gateway that saw it writes it);
- ``tunegate.canary.step``: the step in force and since when (``{"step": 1, "since": 1764...}``);
- ``tunegate.canary.rolled_back``: why a guard rolled it back (the share is 0 from then on, on every replica);
- ``tunegate.canary.promoted_at``: when the last step held and @champion moved to it.

A new challenger version starts a new canary. Decisions are taken on the answer path from in-memory windows
(``record``); registry writes and the promotion happen in ``sync``, on the gateway's registry thread.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from tasks.serve.rollout import CanarySettings, bucket

log = logging.getLogger("tunegate.gateway")
STARTED, STEP, ROLLED_BACK, PROMOTED = ("tunegate.canary.started_at", "tunegate.canary.step",
                                        "tunegate.canary.rolled_back", "tunegate.canary.promoted_at")


@dataclass
class Outcome:
    ok: bool
    seconds: float
    guarded: bool  # a guardrail changed the answer (PII scrubbed)


class Window:
    """The most recent outcomes of one version."""

    def __init__(self, size: int) -> None:
        self.items: deque[Outcome] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self.items)

    def resized(self, size: int) -> "Window":
        other = Window(size)
        other.items.extend(self.items)
        return other

    def error_rate(self) -> float:
        return sum(not o.ok for o in self.items) / len(self.items) if self.items else 0.0

    def guarded_rate(self) -> float:
        return sum(o.guarded for o in self.items) / len(self.items) if self.items else 0.0

    def p95(self) -> float | None:
        times = sorted(o.seconds for o in self.items if o.ok)
        return times[min(len(times) - 1, int(0.95 * len(times)))] if times else None


def failed_guard(challenger: Window, champion: Window, settings: CanarySettings) -> tuple[str, str] | None:
    """(guard, reason) for the first guard the challenger fails against the champion, or None; nothing is
    judged before the challenger has ``min_requests`` answers."""
    g = settings.guards
    if len(challenger) < settings.min_requests:
        return None
    ce, he = challenger.error_rate(), champion.error_rate()
    if ce - he > g.max_error_rate_increase:
        return "error_rate", (f"error rate {ce:.1%} against the champion's {he:.1%} (at most "
                              f"{g.max_error_rate_increase:.1%} more)")
    cp, hp = challenger.p95(), champion.p95()
    if cp is not None and hp is not None and len(champion) >= 10 and cp > g.max_latency_p95_ratio * hp:
        return "latency_p95", (f"p95 latency {cp:.3f} s is {cp / hp:.2f}x the champion's {hp:.3f} s (at most "
                               f"{g.max_latency_p95_ratio}x)")
    cg, hg = challenger.guarded_rate(), champion.guarded_rate()
    if cg - hg > g.max_guardrail_rate_increase:
        return "guardrail_rate", (f"guardrails changed {cg:.1%} of its answers against the champion's {hg:.1%} "
                                  f"(at most {g.max_guardrail_rate_increase:.1%} more)")
    return None


@dataclass
class CanaryState:
    """One challenger version's canary, as this gateway knows it."""

    version: str
    started_at: float
    step: int = 0
    step_since: float = 0.0
    answered_in_step: int = 0
    rolled_back: str | None = None
    promoted: bool = False
    pending: dict[str, str] = field(default_factory=dict)  # tags to write at the next sync


class CanaryRegistry:
    """The registry calls the controller makes: a version's tags, setting one, and the promotion (the same code
    path as ``tunegate promote``)."""

    def __init__(self, tracking_uri: str, model_name: str) -> None:
        self.tracking_uri, self.model_name = tracking_uri, model_name

    def tags(self, version: str) -> dict[str, str]:
        from tasks.registry.store import bounded_http, client

        with bounded_http():
            return dict(client(self.tracking_uri).get_model_version(self.model_name, version).tags or {})

    def set_tag(self, version: str, key: str, value: str) -> None:
        from tasks.registry.store import bounded_http, client

        with bounded_http():
            client(self.tracking_uri).set_model_version_tag(self.model_name, version, key, value)

    def promote(self, version: str) -> None:
        from tasks.registry.versions import promote_unless_blocked

        promote_unless_blocked(self.tracking_uri, self.model_name, version, via="gateway canary controller",
                               reason="the canary held at every traffic step")


class CanaryController:
    def __init__(self, registry: CanaryRegistry, metrics=None) -> None:
        self.registry, self.metrics = registry, metrics
        self.settings = CanarySettings()
        self.lock = threading.Lock()
        self.state: CanaryState | None = None
        self.windows: dict[str, Window] = {}
        self.champion: str | None = None  # the version the "champion" window holds outcomes of
        self._promote_later: str | None = None

    # ------------------------------------------------------------------------------ the answer path

    def share(self) -> float:
        s = self.state
        if s is None or s.rolled_back or s.promoted:
            return 0.0
        return self.settings.steps[min(s.step, len(self.settings.steps) - 1)]

    def takes(self, key: str | None) -> bool:
        """Whether a request with ``key`` goes to the challenger (sticky: the same key, the same answer while
        the share does not fall; a request without a key is drawn at random)."""
        share, s = self.share(), self.state
        if share <= 0 or s is None:
            return False
        draw = bucket(f"{s.version}:{key}") if key else random.random()
        return draw < share

    def record(self, version: str, outcome: Outcome) -> None:
        """An answer (or a failure) of ``version``; judges the challenger's guards at once."""
        with self.lock:
            self.windows.setdefault(version, Window(self.settings.guards.window)).items.append(outcome)
            s = self.state
            if s is None or version != s.version or s.rolled_back or s.promoted:
                return
            s.answered_in_step += 1
            failed = failed_guard(self.windows[version], self.windows.get("champion") or Window(1), self.settings)
            if failed:
                self._roll_back(s, *failed)

    def record_champion(self, outcome: Outcome) -> None:
        """The champion's outcomes are kept under one key, whichever version holds the alias."""
        with self.lock:
            self.windows.setdefault("champion", Window(self.settings.guards.window)).items.append(outcome)

    def _roll_back(self, s: CanaryState, guard: str, reason: str) -> None:
        s.rolled_back = f"{guard}: {reason}"
        s.pending[ROLLED_BACK] = s.rolled_back
        log.warning("canary of v%s rolled back: %s", s.version, s.rolled_back)
        if self.metrics:
            self.metrics.canary_rollbacks.labels(s.version, guard).inc()
            self.metrics.canary_share.set(0)

    # ----------------------------------------------------------------------- the registry thread

    def configure(self, settings: CanarySettings) -> None:
        with self.lock:
            if settings.guards.window != self.settings.guards.window:  # the most recent outcomes carry over
                self.windows = {k: w.resized(settings.guards.window) for k, w in self.windows.items()}
            self.settings = settings

    def sync(self, challenger: str | None, champion: str | None, active: bool, now: float | None = None) -> None:
        """Called after each alias refresh: follow the challenger (a new one starts a new canary), write what
        the answer path decided, adopt what other gateways wrote, step up or promote when due. ``active``:
        whether the rollout in force is a canary (a canary not in force is neither started nor stepped)."""
        now = time.time() if now is None else now
        with self.lock:
            if champion != self.champion:  # a new champion: its baseline starts afresh
                self.champion = champion
                self.windows.pop("champion", None)
        if challenger is None or challenger == champion or not active:
            if self.state is not None:
                self._flush(self.state)  # what the answer path decided still reaches the registry
            with self.lock:
                if self.state and self.state.version != challenger:
                    self.state = None
            self._publish()
            return
        if self.state is None or self.state.version != challenger:
            self._start(challenger, now)
        s = self.state
        self._adopt(s, self.registry.tags(s.version), now)
        with self.lock:
            self._advance(s, now)
        self._flush(s)
        self._publish()

    def _start(self, version: str, now: float) -> None:
        tags = self.registry.tags(version)
        started = float(tags.get(STARTED) or 0)
        if not started:
            started = now
            self.registry.set_tag(version, STARTED, repr(now))
            log.info("canary of v%s starts at %.0f%%", version, 100 * self.settings.steps[0])
        with self.lock:
            self.state = CanaryState(version=version, started_at=started, step_since=started)
            self.windows.pop(version, None)

    def _adopt(self, s: CanaryState, tags: dict[str, str], now: float) -> None:
        if tags.get("status") == "blocked" and not s.rolled_back:
            s.rolled_back = f"blocked: its run blocked it ({tags.get('blocked_by', 'blocked')})"
        if tags.get(ROLLED_BACK) and not s.rolled_back:
            s.rolled_back = tags[ROLLED_BACK]
        if tags.get(PROMOTED):
            s.promoted = True
        try:
            step = json.loads(tags.get(STEP) or "{}")
        except ValueError:
            step = {}
        if int(step.get("step", 0)) > s.step:
            s.step, s.step_since, s.answered_in_step = int(step["step"]), float(step.get("since", now)), 0

    def _advance(self, s: CanaryState, now: float) -> None:
        if s.rolled_back or s.promoted:
            return
        cfg = self.settings
        due = now - s.step_since >= cfg.step_seconds and s.answered_in_step >= cfg.min_requests
        if not due:
            return
        if s.step + 1 < len(cfg.steps):
            s.step, s.step_since, s.answered_in_step = s.step + 1, now, 0
            s.pending[STEP] = json.dumps({"step": s.step, "since": now})
            log.info("canary of v%s steps up to %.0f%%", s.version, 100 * cfg.steps[s.step])
        elif cfg.promote:
            s.promoted = True
            s.pending[PROMOTED] = repr(now)
            self._promote_later = s.version

    def _flush(self, s: CanaryState) -> None:
        """Promote when the last step held, then write what this gateway decided to the challenger's version."""
        version, self._promote_later = self._promote_later, None
        if version is not None:
            try:
                self.registry.promote(version)
                log.info("canary of v%s held at every step: @champion moved to it", version)
                if self.metrics:
                    self.metrics.canary_promotions.labels(version).inc()
            except Exception as exc:  # a blocked or vanished version: the canary ends rolled back, with why
                with self.lock:
                    s.promoted, s.rolled_back = False, f"promotion refused: {exc}"
                    s.pending.pop(PROMOTED, None)
                    s.pending[ROLLED_BACK] = s.rolled_back
        with self.lock:
            pending, s.pending = s.pending, {}
        for key, value in pending.items():
            self.registry.set_tag(s.version, key, value)

    def _publish(self) -> None:
        if self.metrics:
            self.metrics.canary_share.set(self.share())
