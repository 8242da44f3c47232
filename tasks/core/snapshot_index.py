"""The stored snapshots by content fingerprint, and what each was made from: the chain `tunegate gc` keeps and
`tunegate lineage` and `tunegate forget` walk.

A snapshot's manifest names its input by ``parent_fingerprint``: the previous stage's snapshot, or for ``ingest``
the raw files' fingerprint (the files themselves are listed in the snapshot's ``inputs.jsonl``). A ``history``
snapshot (a cumulative dataset: tasks/data/history.py) has two inputs, the champion's training snapshot and the
new data, listed in its stats as ``made_from``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.snapshot import MANIFEST


class Index:
    def __init__(self, root: Path) -> None:
        self.by_fingerprint: dict[str, list[Path]] = {}
        self.manifests: dict[Path, dict] = {}
        for manifest in sorted(Path(root).glob(f"*/*/{MANIFEST}")):
            if manifest.parent.name.startswith("."):  # a temporary folder (a writer at work, or one that died)
                continue
            try:
                m = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            self.by_fingerprint.setdefault(m.get("fingerprint", ""), []).append(manifest.parent)
            self.manifests[manifest.parent] = m

    def parents(self, folder: Path) -> list[str]:
        """The fingerprints ``folder`` was made from (snapshots, or for ingest the raw files' fingerprint)."""
        m = self.manifests.get(folder) or {}
        listed = (m.get("stats") or {}).get("made_from")
        if listed:
            return [str(p) for p in listed]
        return [m["parent_fingerprint"]] if m.get("parent_fingerprint") else []

    def find(self, fingerprint: str) -> list[Path]:
        return self.by_fingerprint.get(fingerprint, [])

    def with_ancestors(self, folders: list[Path]) -> list[Path]:
        """``folders`` and every stored snapshot they were made from, transitively."""
        out, todo = [], list(folders)
        while todo:
            folder = todo.pop()
            if folder in out:
                continue
            out.append(folder)
            for fingerprint in self.parents(folder):
                todo.extend(self.find(fingerprint))
        return out
