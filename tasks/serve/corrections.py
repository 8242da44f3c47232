"""Corrections users sent the gateway, as instruction data for the next retrain (``data.corrections``).

``export_corrections`` reads the accepted corrections of one model's traffic store (``traffic.accepted_corrections``:
the latest feedback on each answer, with a corrected answer and not rated below the floor) and writes them as
a JSONL file in the layout ingest reads as instruction records, one line each::

    {"instruction": <the user's prompt>, "output": <the corrected answer>, "kind": "correction",
     "response_id": ..., "model_version": ..., "feedback_id": ..., "feedback_time": ...}

Ingest keeps every key but ``instruction``/``input``/``output`` as the document's metadata, so each record carries
its lineage (which answer of which registered version it corrects, which feedback) through dedup, PII scrubbing
and the contracts like any other record. Lines are ordered by feedback time (then response id): the same store
gives the same bytes, and a correction keeps its line (and so its document id and its side of the train/eval
split) as later ones are added. Prompts and corrections were scrubbed when the gateway wrote them; the pipeline's
PII stage scrubs them again with the run's settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.hashing import file_sha256
from tasks.serve.traffic import accepted_corrections

CORRECTIONS_FILE = "gateway-corrections.jsonl"
KIND = "correction"


class CorrectionsExport(BaseModel):
    """What an export took from a traffic store, and the file it wrote (none when there was nothing to take)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(description="instruction records written: one per corrected answer")
    file: str | None = Field(None, description="the JSONL file written; None when there was nothing to export")
    sha256: str | None = Field(None, description="sha256 of that file")
    response_ids: list[str] = Field(default_factory=list, description="the corrected answers, in file order")
    versions: list[str] = Field(default_factory=list, description="the registered versions that gave those answers")
    traffic: str = Field(description="the traffic store read (the gateway's folder for the model)")
    min_rating: float = Field(description="feedback rated below this was left out")


def correction_records(folder: Path, min_rating: float = 0.0) -> list[dict]:
    """The store's accepted corrections as instruction records with their lineage, in file order."""
    pairs = sorted(accepted_corrections(Path(folder), min_rating),
                   key=lambda p: (float(p.get("time") or 0.0), str(p["response_id"]), str(p.get("feedback_id"))))
    return [{"instruction": p["instruction"], "output": p["response"], "kind": KIND,
             "response_id": p["response_id"], "model_version": p.get("version"), "feedback_id": p.get("feedback_id"),
             "feedback_time": p.get("time")} for p in pairs]


def _version_key(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def export_corrections(folder: Path, out: Path, min_rating: float = 0.0) -> CorrectionsExport:
    """Write the accepted corrections of the traffic store ``folder`` to ``out`` (JSONL, instruction layout).

    Nothing to export (no store, no corrections, all rated below ``min_rating``): no file is written and one
    left at ``out`` by an earlier attempt is removed, so a data path never holds stale corrections.
    """
    folder, out = Path(folder), Path(out)
    records = correction_records(folder, min_rating) if folder.is_dir() else []
    summary = {"traffic": str(folder), "min_rating": min_rating}
    if not records:
        out.unlink(missing_ok=True)
        return CorrectionsExport(count=0, file=None, sha256=None, response_ids=[], versions=[], **summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    versions = sorted({str(r["model_version"]) for r in records if r["model_version"] is not None}, key=_version_key)
    return CorrectionsExport(count=len(records), file=str(out), sha256=file_sha256(out),
                             response_ids=[str(r["response_id"]) for r in records], versions=versions, **summary)
