"""The ledger of drift events emitted: a drop already reported as drifted against the same reference is not
reported again (a scheduled monitor would otherwise start a retrain on it every hour while its retrain is
blocked)."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core import snapshot
from tasks.core.state import StatePaths


def fingerprint(snapshot_path: str) -> str:
    return json.loads((Path(snapshot_path) / snapshot.MANIFEST).read_text())["fingerprint"]


def ledger_path(state: StatePaths) -> Path:
    return state.drift / "emitted.jsonl"


def already_reported(state: StatePaths, key: dict[str, str]) -> str | None:
    """The drift id that already emitted an event for this (dataset, drop, reference), if any."""
    ledger = ledger_path(state)
    if not ledger.is_file():
        return None
    for line in ledger.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if all(row.get(k) == v for k, v in key.items()):
            return row.get("drift_id")
    return None


def remember(state: StatePaths, key: dict[str, str], drift_id: str) -> None:
    ledger = ledger_path(state)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger, "a") as fh:
        fh.write(json.dumps({**key, "drift_id": drift_id}) + "\n")
