"""Alias history: every move of an alias, who or what moved it and why, kept where it can be queried later.

MLflow keeps only where an alias points now. Every tunegate code path that moves one (a run registering or
promoting, ``tunegate promote`` and ``rollback``, the gateway's canary controller) goes through ``set_alias``, which
appends an ``AliasEvent`` (model, alias, version, the previous holder, by whom, via what, why, when) to the state
folder's append-only ``alias-history.jsonl`` and sets it as a registered-model tag
(``tunegate.alias_event.<time>.<alias>``), so a second machine reading the same registry sees the same history.
``holder_at`` answers "which version was @champion at T and why". Moves made outside tunegate (MLflow's UI or
client) are not seen.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

EVENT_TAG_PREFIX = "tunegate.alias_event."
LOG_NAME = "alias-history.jsonl"
ACTOR_ENV = "TUNEGATE_ACTOR"  # who is moving aliases (a CI job, a person); default user@host


class AliasEvent(BaseModel):
    model: str
    alias: str
    version: str | None  # None: the alias was removed
    previous: str | None
    at: datetime
    by: str  # who: TUNEGATE_ACTOR, else user@host
    via: str  # what: "tunegate run ID", "tunegate promote", "tunegate rollback", "gateway canary controller"
    reason: str

    @property
    def key(self) -> str:
        return f"{EVENT_TAG_PREFIX}{self.at.strftime('%Y%m%dT%H%M%S.%fZ')}.{self.alias}"

    def line(self) -> str:
        when = self.at.strftime("%Y-%m-%d %H:%M:%SZ")
        return (f"{when}  {self.model} @{self.alias:<10} v{self.previous or '-'} -> v{self.version or '-'}  "
                f"by {self.by} via {self.via}: {self.reason}")


def actor() -> str:
    if os.environ.get(ACTOR_ENV):
        return os.environ[ACTOR_ENV]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def log_path(home: Path | None = None) -> Path:
    from tasks.core.state import StatePaths

    return StatePaths.from_env(home).home / LOG_NAME


def set_alias(c, model: str, alias: str, version: str, via: str, reason: str, home: Path | None = None) -> bool:
    """Point ``alias`` at ``version`` and record the move (nothing when it is there already). True when moved."""
    from mlflow.exceptions import MlflowException

    try:
        previous: str | None = str(c.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        previous = None
    if previous == str(version):
        return False
    c.set_registered_model_alias(model, alias, str(version))
    record(c, AliasEvent(model=model, alias=alias, version=str(version), previous=previous,
                         at=datetime.now(timezone.utc), by=actor(), via=via, reason=reason), home)
    return True


def record(c, event: AliasEvent, home: Path | None = None) -> None:
    """Append the event to the state folder's log (flushed to disk) and set it as a registered-model tag (a tag the
    registry refuses is warned about: the move happened, and ``events`` reads the log too)."""
    path = log_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:  # one write of one line, in append mode: lines never interleave
        fh.write(event.model_dump_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        c.set_registered_model_tag(event.model, event.key, event.model_dump_json(exclude={"model"})[:4900])
    except Exception as exc:  # the alias has moved and the log has the line: report, do not undo or fail the move
        logging.getLogger(__name__).warning("alias move %s not tagged in the registry (kept in %s): %s", event.key,
                                            path, exc)


def events(c, model: str, home: Path | None = None) -> list[AliasEvent]:
    """The model's alias moves, oldest first: the registry's tags, and the state folder's log for moves whose tag
    did not reach the registry."""
    found: dict[str, AliasEvent] = {}
    for key, value in (c.get_registered_model(model).tags or {}).items():
        if key.startswith(EVENT_TAG_PREFIX):
            try:
                event = AliasEvent.model_validate({**json.loads(value), "model": model})
            except ValueError:
                continue
            found[event.key] = event
    path = log_path(home)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                event = AliasEvent.model_validate_json(line)
            except ValueError:  # a line cut short by a crash
                continue
            if event.model == model:
                found.setdefault(event.key, event)
    return sorted(found.values(), key=lambda e: e.at)


def holder_at(history: list[AliasEvent], alias: str, at: datetime) -> AliasEvent | None:
    """The move that put ``alias`` where it was at ``at`` (None: no recorded move before then)."""
    before = [e for e in history if e.alias == alias and e.at <= at]
    return before[-1] if before else None
