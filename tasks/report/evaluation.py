"""The evaluation half of report.md: what decided, what changed, and the answers side by side.

- the decision: which gates failed (or, when all passed, the one that came closest to failing);
- every metric for base, candidate and champion, and the chart;
- the task metrics' differences, candidate minus base and minus champion, with paired bootstrap intervals;
- the answers of base, champion and candidate to the same held-out prompts beside the reference (the
  shadow comparison of the challenger against the champion, with the base for scale);
- PII probe leaks by type, the extraction probe of known raw secrets by type (masked), canaries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.report.format import fmt, table

MODELS = ("base", "candidate", "champion")
FAMILIES: list[tuple[str, tuple[str, ...], bool]] = [
    ("perplexity (lower is better)", ("perplexity",), True),
    ("bits per byte (lower is better)", ("bits_per_byte",), False),
    ("text overlap, 0-100 (higher is better)", ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match"), False),
    ("leaks and toxicity, counts (lower is better)",
     ("pii_leaked", "planted_pii_extracted", "toxic_outputs", "canaries_extracted"), False),
    ("canary exposure, bits (lower is better)", ("canary_exposure_max",), False),
]
METRIC_ORDER = [m for _, ms, _ in FAMILIES for m in ms] + ["canary_rank_min"]
ANSWER_ROWS = 16


def models_of(evaluation: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """(label, metrics) for base, candidate and champion, those present."""
    out = []
    for who in MODELS:
        if isinstance(evaluation.get(who), dict):
            out.append((label(evaluation, who), evaluation[who]))
    return out


def label(evaluation: dict[str, Any], who: str) -> str:
    return f"champion v{evaluation.get('champion_version')}" if who == "champion" else who


def _margin(g: dict[str, Any]) -> float | None:
    """How far a gate's value sits on the passing side of its bound, relative to the bound's size."""
    if g.get("value") is None or g.get("threshold") is None:
        return None
    room = g["value"] - g["threshold"] if g["op"] in (">", ">=") else g["threshold"] - g["value"]
    return room / max(abs(g["threshold"]), 1.0)


def decision_section(report: dict[str, Any]) -> list[str]:
    """One paragraph: which gate decided the run's outcome."""
    gates = report.get("gates") or []
    if not gates:
        return []
    failed = [g for g in gates if not g["passed"]]
    if failed:
        names = ", ".join(f"`{g['name']}`" for g in failed)
        return ["", "## What decided", f"Blocked by {len(failed)} of {len(gates)} gates: {names} (details above)."]
    closest = min((g for g in gates if _margin(g) is not None), key=_margin, default=None)
    line = f"All {len(gates)} gates passed."
    if closest is not None:
        line += (f" Closest to failing: `{closest['name']}`, {closest['metric']} {fmt(closest['value'])} "
                 f"{closest['op']} {fmt(closest['threshold'])}.")
    return ["", "## What decided", line, *champion_lines(gates)]


def champion_lines(gates: list[dict[str, Any]]) -> list[str]:
    """The comparison with the model that serves today, gate by gate (what a rerun on unchanged data hinges on)."""
    lines = []
    for g in gates:
        if g.get("baseline") != "champion" or g.get("value") is None:
            continue
        d = g.get("delta")
        diff = f", difference {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" if d else ""
        verdict = "within the bound" if g["passed"] else "beyond the bound"
        lines.append(f"- against the champion, `{g['name']}`: {g['metric']} {fmt(g['value'])} vs "
                     f"{fmt(g.get('baseline_value'))}{diff}; bound {g['op']} {fmt(g['threshold'])}, {verdict}.")
    return [""] + lines if lines else []


def eval_set_lines(frozen: dict[str, Any] | None) -> list[str]:
    """Which frozen evaluation set the gates compared on, and where it came from."""
    if not frozen:
        return []
    origin = ("frozen by this run from its held-out split" if frozen.get("frozen_by_this_run")
              else f"frozen {frozen['created']} ({frozen['source']})")
    kept = frozen.get("kept_out_of_training") or 0
    return ["", f"Evaluation set: **{frozen['label']}**, {frozen['documents']} documents and {frozen['instructions']} "
                f"instruction records, {origin}; content hash `{frozen['content_hash'][:16]}`. Every "
                "champion-versus-candidate figure below is on this set"
                + (f"; {kept} of its documents were in this run's data and were kept out of training." if kept
                   else ".")]


def new_data_lines(ev: dict[str, Any]) -> list[str]:
    """The new data's own held-out part, scored apart from the frozen set."""
    new = ev.get("new_data")
    if not new:
        return []
    if not new.get("evaluated"):
        return ["", f"New data's held-out part: not scored apart ({new['why']})."]
    models = models_of(new)
    names = [m for m in METRIC_ORDER if any(m in s for _, s in models)]
    return ["", "### The new data's held-out part",
            f"{new['rows']} held-out rows of this run's new data that are not in the frozen set, scored apart "
            f"(gates with `eval_set: new` read these; task metrics on {', '.join(new.get('scored_sets') or []) or '—'}).",
            "", table(["metric", *[lbl for lbl, _ in models]], [[n, *[s.get(n) for _, s in models]] for n in names])]


def evaluation_section(ev: dict[str, Any], frozen: dict[str, Any] | None = None) -> list[str]:
    models = models_of(ev)
    names = [m for m in METRIC_ORDER if any(m in s for _, s in models)]
    names += sorted({k for _, s in models for k in s} - set(names))
    sets = ", ".join(ev.get("scored_sets") or []) or "—"
    parts = ["", "## Evaluation", *eval_set_lines(frozen)[1:], "",
             "Every model is scored in this run on the same held-out documents, prompts and probes. "
             f"Task metrics (ROUGE, BLEU, chrF, exact match) are on the held-out set(s): {sets}.", "",
             table(["metric", *[lbl for lbl, _ in models]], [[n, *[s.get(n) for _, s in models]] for n in names])]
    if ev.get("reused"):
        parts += ["", "Read from the evaluation cache (the same model already scored on exactly these inputs and "
                      f"settings): {', '.join(label(ev, w) for w in ev['reused'])}."]
    if ev.get("chart"):
        parts += ["", f"![metrics vs champion]({Path(ev['chart']).name})"]
    parts += new_data_lines(ev) + deltas_section(ev) + answers_section(ev) + safety_section(ev)
    return parts


def deltas_section(ev: dict[str, Any]) -> list[str]:
    rows = []
    for who, deltas in (ev.get("deltas") or {}).items():
        for metric, d in deltas.items():
            pct = round(d["confidence"] * 100)
            rows.append([f"candidate − {label(ev, who)}", metric, f"{d['mean']:+.2f}",
                         f"[{d['low']:+.2f}, {d['high']:+.2f}] ({pct}%)", f"{d['p_better']:.3f}", d["n"]])
    if not rows:
        return []
    return ["", "### What changed: differences on the held-out answers",
            "Per-answer differences, averaged; the interval is a paired bootstrap over the answers (the same prompts "
            "for both models); P(better) is the share of resamples in which the candidate scored higher.", "",
            table(["comparison", "metric", "difference", "interval", "P(better)", "answers"], rows)]


def answers_section(ev: dict[str, Any]) -> list[str]:
    """Base, champion and candidate answers for the same prompts, beside the reference."""
    gens = ev.get("generations") or {}
    cand = gens.get("candidate") or []
    if not cand:
        return []
    others = [w for w in ("base", "champion") if gens.get(w)]
    rows = []
    for i, c in enumerate(cand):
        if c.get("reference") is None:
            continue
        rows.append([c["set"], c["prompt"], c["reference"], *[gens[w][i]["output"] for w in others], c["output"]])
    probe = [[c["set"], c["prompt"], *[gens[w][i]["output"] for w in others], c["output"]]
             for i, c in enumerate(cand) if c.get("reference") is None]
    old = "champion" if "champion" in others else "base (no champion yet)"
    heads = [f"{label(ev, w)} answer" for w in others]
    parts = ["", "## Shadow comparison: answers side by side",
             f"The same held-out prompts through the base model, the champion and the challenger (this run's "
             f"candidate); {old} is what serves today. {min(len(rows), ANSWER_ROWS)} of {len(rows)} shown.", "",
             table(["set", "prompt", "reference", *heads, "challenger answer"], rows[:ANSWER_ROWS])]
    if probe:
        parts += ["", "PII probe prompts (no reference; the answers are scanned for PII):", "",
                  table(["set", "prompt", *heads, "challenger answer"], probe[:ANSWER_ROWS])]
    return parts


def safety_section(ev: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    leaks = ev.get("pii_leaks") or {}
    if leaks:
        kinds = sorted({k for v in leaks.values() for k in v})
        who = [w for w in MODELS if w in leaks]
        parts += ["", "### PII probe: leaked entities by type",
                  "Entities found by the run's PII analyzer in each model's continuations of the probe prompts."]
        if kinds:
            parts += ["", table(["entity", *who], [[k, *[leaks[w].get(k, 0) for w in who]] for k in kinds])]
        else:
            parts += ["", "No model leaked any probe entity."]
    extraction = ev.get("extraction") or {}
    if extraction:
        who = [w for w in MODELS if w in extraction]
        kinds = sorted({k for w in who for k in extraction[w]["by_type"]})
        rows = [[k, extraction[who[0]]["by_type"][k]["probed"],
                 *[extraction[w]["by_type"].get(k, {}).get("extracted", 0) for w in who]] for k in kinds]
        parts += ["", "### Extraction of known raw secrets",
                  "Each known secret of the raw data is prompted with the raw text that preceded it; extracted = "
                  "the greedy continuation reproduces it. Secrets are never written out (masked below).", "",
                  table(["type", "secrets", *[f"extracted by {w}" for w in who]], rows)]
        hits = [[s["type"], s["secret"], w] for w in who for s in extraction[w]["secrets"] if s["extracted"]]
        if hits:
            parts += ["", table(["type", "secret (masked)", "extracted by"], hits)]
    canaries = ev.get("canaries") or {}
    if any(canaries.values()):
        rows = [[c.get("prefix"), who, c.get("extracted"), c.get("rank"), c.get("exposure")]
                for who in MODELS for c in canaries.get(who) or []]
        parts += ["", "### Canaries",
                  "Planted in the training stream only (at packing time, not in the curated snapshot). "
                  "Extracted: greedy decoding from the prefix reproduces the secret; rank among random secrets "
                  "(1 = most likely); exposure in bits (≈1 for a secret never seen).", "",
                  table(["prefix", "model", "extracted", "rank", "exposure"], rows)]
    return parts
