"""The ledgers of the drift monitor, JSON lines in the state folder's drift/:

- ``emitted.jsonl``, the drift events emitted: a drop already reported as drifted against the same reference is
  not reported again (a scheduled monitor would otherwise start a retrain on it every hour while its retrain is
  blocked); traffic that drifted from a champion is reported once per champion;
- ``checks.jsonl``, every drop and traffic window compared: the same drop (or prompts) against the same reference,
  thresholds and method are not compared again, the earlier result is reported."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core import snapshot
from tasks.core.state import StatePaths


def settings_digest(settings) -> str:
    """A short digest of a pydantic settings object (the thresholds a result was decided with)."""
    import hashlib

    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16]


def fingerprint(snapshot_path: str) -> str:
    return json.loads((Path(snapshot_path) / snapshot.MANIFEST).read_text())["fingerprint"]


def ledger_path(state: StatePaths) -> Path:
    return state.drift / "emitted.jsonl"


def checks_path(state: StatePaths) -> Path:
    return state.drift / "checks.jsonl"


def _rows(ledger: Path, key: dict[str, str]) -> list[dict]:
    """The ledger's rows that match every item of ``key``, oldest first (a torn line is skipped)."""
    if not ledger.is_file():
        return []
    rows = []
    for line in ledger.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and all(row.get(k) == v for k, v in key.items()):
            rows.append(row)
    return rows


def _append(ledger: Path, row: dict) -> None:
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def already_reported(state: StatePaths, key: dict[str, str]) -> str | None:
    """The drift id that already emitted an event for this (dataset, drop, reference), if any."""
    rows = _rows(ledger_path(state), key)
    return rows[0].get("drift_id") if rows else None


def remember(state: StatePaths, key: dict[str, str], drift_id: str) -> None:
    _append(ledger_path(state), {**key, "drift_id": drift_id})


def earlier_check(state: StatePaths, key: dict[str, str]) -> dict | None:
    """The latest check matching ``key`` (dataset, drop or window, reference, method, thresholds) whose report is
    still there, if any."""
    for row in reversed(_rows(checks_path(state), key)):
        report = state.drift / str(row.get("drift_id")) / "report.json"
        try:
            return json.loads(report.read_text())
        except (OSError, ValueError):
            continue
    return None


def remember_check(state: StatePaths, key: dict[str, str], drift_id: str, decision: str) -> None:
    _append(checks_path(state), {**key, "drift_id": drift_id, "decision": decision})
