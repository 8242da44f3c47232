"""The drift report: Markdown for a person, JSON beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def _drop_lines(rep: dict[str, Any]) -> list[str]:
    parts = [f"- new data: `{rep['new_data']}`"]
    if rep.get("new"):
        n = rep["new"]
        parts.append(f"- new documents: {_fmt((rep.get('statistics') or {}).get('documents_new'))} after cleaning "
                     f"({_fmt(n.get('ingested'))} ingested, {_fmt(n.get('quarantined'))} quarantined)")
    return parts


def _traffic_lines(rep: dict[str, Any]) -> list[str]:
    w = rep.get("window") or {}
    parts = [f"- traffic: `{w.get('folder')}` — {w.get('description')}"]
    if w.get("versions"):
        parts.append("- requests by version: " + ", ".join(f"v{v}: {n}" for v, n in sorted(w["versions"].items())))
    if rep.get("new_data"):
        parts.append(f"- the window's prompts as a data drop (the event's new data): `{rep['new_data']}`")
    return parts


def markdown(rep: dict[str, Any]) -> str:
    decision = rep.get("decision", "?")
    head = "DRIFT" if rep.get("drift") else decision.upper()
    traffic = rep.get("source") == "traffic"
    if traffic:
        parts = [f"# Prompt drift report `{rep['drift_id']}` — model `{rep['model']}` (dataset `{rep['dataset']}`) "
                 f"— {head}", "", *_traffic_lines(rep)]
    else:
        parts = [f"# Drift report `{rep['drift_id']}` — dataset `{rep['dataset']}` — {head}", "", *_drop_lines(rep)]
    if rep.get("reference"):
        parts.append(f"- reference: {rep['reference']['description']}")
    if rep.get("tokenizer"):
        parts.append(f"- tokenizer: {rep['tokenizer']['source']} (`{rep['tokenizer']['path']}`)")
    if rep.get("note"):
        parts += ["", f"**{rep['note']}**"]
    if decision == "nothing new":
        parts += ["", f"**{100 * (rep['statistics'].get('duplicate_rate') or 0):.0f}% of the new "
                      f"{'prompts' if traffic else 'documents'} are already in the reference: nothing new to train on, "
                      "no drift event.**"]
    if decision == "too little data":
        parts += ["", f"**Too little data for any test (fewer than {rep['thresholds']['min_documents']} new documents, "
                      "or too few on a side): no decision.**"]
    if rep.get("notes"):
        parts += ["", "## How the prompts were compared", "", *[f"- {n}" for n in rep["notes"]]]
    if rep.get("checks"):
        def verdict(c: dict) -> str:
            if c["threshold"] is None:
                return "off"
            if not c.get("decided", True):
                return "no decision"
            return "DRIFT" if c["drifted"] else "ok"

        rows = [[c["name"], _fmt(c["value"]), "—" if c["threshold"] is None else f"> {_fmt(c['threshold'])}",
                 _fmt(c.get("p_value")), "—" if c.get("alpha") is None else f"<= {_fmt(c['alpha'])}", verdict(c),
                 c.get("detail", "")] for c in rep["checks"]]
        t = rep.get("thresholds") or {}
        parts += ["", "## Tests", "",
                  f"Each test compares the drop with {t.get('resamples', '?')} random drops of the same size drawn "
                  "from both sides' documents; it fires when its p-value is at most the false-alarm rate "
                  f"({t.get('false_alarm_rate', '?')}) split over the tests that ran, and its effect size is above "
                  "its floor.", "",
                  "| test | effect size | floor | p-value | needs | result | detail |",
                  "|---|---|---|---|---|---|---|", *["| " + " | ".join(r) + " |" for r in rows]]
        s = rep["statistics"]
        unit = ("prompts" if rep.get("basis") == "prompts" else "documents / prompts") if traffic else "documents"
        side = [[unit, s.get("documents_reference"), s.get("documents_new")],
                ["mean length (chars)", s.get("mean_length_reference"), s.get("mean_length_new")],
                ["length PSI (effect size)", None, s.get("length_psi")],
                ["OOV rate (words not one token)", s.get("oov_rate_reference"), s.get("oov_rate_new")],
                [("PII placeholders / prompt" if traffic else "PII entities / document") + ": structured",
                 s.get("pii_structured_reference"), s.get("pii_structured_new")],
                [("PII placeholders / prompt" if traffic else "PII entities / document") + ": names and places",
                 s.get("pii_named_reference"), s.get("pii_named_new")],
                ["already in the reference", None, s.get("duplicate_rate")]]
        parts += ["", "## Both sides", "", f"| | reference | {'traffic' if traffic else 'new'} |", "|---|---|---|",
                  *[f"| {a} | {_fmt(b)} | {_fmt(c)} |" for a, b, c in side]]
    ev = rep.get("event")
    if ev:
        what = "the window's prompts" if traffic else "the new data"
        parts += ["", f"Event `{ev['event']}` emitted for `{ev['resource']}` (id {ev['id']}): the retrain "
                      f"deployment's trigger starts a retrain on {what}."]
    else:
        parts += ["", "No drift event emitted."]
    return "\n".join(parts) + "\n"


def write(rep: dict[str, Any], out: Path) -> str:
    """report.md and report.json in ``out``; returns the Markdown."""
    md = markdown(rep)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(md)
    (out / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    return md
