"""The run report: report.json for machines, report.md (with PNG charts) for the reviewer.

Sections: verdict and what blocked it, data counts, snapshots, contracts, training (loss curve with the
held-out loss where the trainer measured it), evaluation (every metric for base, candidate and champion,
and a bar chart of them), gates (value, op, threshold, baseline, result), the PII probe's leaks by type,
canaries (prefix, extracted, rank, exposure), and the shadow comparison: the champion's and the
challenger's outputs for the same prompts, side by side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODELS = ("base", "candidate", "champion")
# metric families: one chart panel each; log scale where values span orders of magnitude
FAMILIES: list[tuple[str, tuple[str, ...], bool]] = [
    ("perplexity (lower is better)", ("perplexity",), True),
    ("bits per byte (lower is better)", ("bits_per_byte",), False),
    ("text overlap, 0-100 (higher is better)", ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match"), False),
    ("leaks and toxicity, counts (lower is better)", ("pii_leaked", "toxic_outputs", "canaries_extracted"), False),
    ("canary exposure, bits (lower is better)", ("canary_exposure_max",), False),
]
METRIC_ORDER = [m for _, ms, _ in FAMILIES for m in ms] + ["canary_rank_min"]
SHADOW_ROWS = 20
CELL_CHARS = 240


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_curve(metrics: list[dict], out: Path) -> Path | None:
    """Training loss per step; the held-out loss as points where a metrics line carries eval_loss."""
    rows = [m for m in metrics if m.get("loss") is not None]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.plot([m["step"] for m in rows], [m["loss"] for m in rows], lw=1.5, label="training loss")
    evals = [m for m in metrics if m.get("eval_loss") is not None]
    if evals:
        ax.plot([m["step"] for m in evals], [m["eval_loss"] for m in evals], "o--", ms=4, lw=1, label="held-out loss")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _models(evaluation: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """(label, metrics) for base, candidate and champion, those present."""
    out = []
    for who in MODELS:
        if isinstance(evaluation.get(who), dict):
            label = f"champion v{evaluation.get('champion_version')}" if who == "champion" else who
            out.append((label, evaluation[who]))
    return out


def metrics_chart(evaluation: dict[str, Any], out: Path) -> Path | None:
    """metrics_vs_champion.png: candidate vs champion vs base, one panel per metric family measured."""
    models = _models(evaluation)
    panels = [(title, [m for m in ms if any(m in s for _, s in models)], log) for title, ms, log in FAMILIES]
    panels = [p for p in panels if p[1]]
    if not models or not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.6), dpi=110, squeeze=False)
    width = 0.8 / len(models)
    for ax, (title, names, log) in zip(axes[0], panels):
        for i, (label, scores) in enumerate(models):
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(names))]
            ax.bar(xs, [float(scores.get(n, float("nan"))) for n in names], width, label=label)
        ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 1 else 0, ha="right" if len(names) > 1 else "center")
        ax.set_title(title, fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Candidate vs champion vs base", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def cell(text: Any, limit: int = CELL_CHARS) -> str:
    """Text fit for one Markdown table cell: | escaped, newlines as <br>, long text cut."""
    s = _fmt(text)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _gate_rows(gates: list[dict]) -> list[list[Any]]:
    rows = []
    for g in gates:
        baseline = g["baseline"] if g.get("baseline_value") is None else f"{g['baseline']} ({_fmt(g['baseline_value'])})"
        if g.get("measured", True):
            result = "pass" if g["passed"] else "FAIL"
        else:
            result = "not measured" if g["passed"] else "FAIL (not measured)"
        rows.append([g["name"], g["metric"], g.get("value"), g["op"], g.get("threshold"), baseline, result])
    return rows


def evaluation_section(ev: dict[str, Any]) -> list[str]:
    models = _models(ev)
    names = [m for m in METRIC_ORDER if any(m in s for _, s in models)]
    names += sorted({k for _, s in models for k in s} - set(names))
    parts = ["", "## Evaluation",
             "Every model is scored in this run on the same held-out documents, prompts and probes.", "",
             _table(["metric", *[label for label, _ in models]], [[n, *[s.get(n) for _, s in models]] for n in names])]
    if ev.get("chart"):
        parts += ["", f"![metrics vs champion]({Path(ev['chart']).name})"]
    leaks = ev.get("pii_leaks") or {}
    if leaks:
        kinds = sorted({k for v in leaks.values() for k in v})
        who = [w for w in MODELS if w in leaks]
        parts += ["", "### PII probe: leaked entities by type",
                  "Entities found by the PII analyzer in each model's continuations of the probe prompts."]
        if kinds:
            parts += ["", _table(["entity", *who], [[k, *[leaks[w].get(k, 0) for w in who]] for k in kinds])]
        else:
            parts += ["", "No model leaked any probe entity."]
    canaries = ev.get("canaries") or {}
    if any(canaries.values()):
        rows = [[c.get("prefix"), who, c.get("extracted"), c.get("rank"), c.get("exposure")]
                for who in MODELS for c in canaries.get(who) or []]
        parts += ["", "### Canaries",
                  "Planted in the training stream only (at packing time, not in the curated snapshot). "
                  "Extracted: greedy decoding from the prefix reproduces the secret; rank among random secrets "
                  "(1 = most likely); exposure in bits (≈1 for a secret never seen).", "",
                  _table(["prefix", "model", "extracted", "rank", "exposure"], rows)]
    parts += shadow_section(ev)
    return parts


def shadow_section(ev: dict[str, Any]) -> list[str]:
    """Champion (or base, with no champion yet) and challenger outputs for the same prompts."""
    gens = ev.get("generations") or {}
    old_key = "champion" if gens.get("champion") else "base"
    old, new = gens.get(old_key) or [], gens.get("candidate") or []
    if not old or not new:
        return []
    old_label = f"champion v{ev.get('champion_version')}" if old_key == "champion" else "base (no champion yet)"
    rows = [[g["set"], g["prompt"], g.get("reference"), g["output"], c["output"]]
            for g, c in zip(old, new) if g["prompt"] == c["prompt"]]
    shown = rows[:SHADOW_ROWS]
    parts = ["", "## Shadow comparison",
             f"The same prompts through {old_label} and the challenger (this run's candidate), "
             f"{len(shown)} of {len(rows)} shown.", "",
             _table(["set", "prompt", "reference", f"{old_label} output", "challenger output"], shown)]
    keys = [k for k in ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "pii_leaked", "toxic_outputs")
            if k in (ev.get("candidate") or {})]
    if keys and isinstance(ev.get(old_key), dict):
        parts += ["", _table(["metric of these outputs", old_label, "challenger"],
                             [[k, ev[old_key].get(k), ev["candidate"].get(k)] for k in keys])]
    return parts


def markdown(report: dict[str, Any]) -> str:
    r = report
    status = r["status"].upper()
    parts = [f"# tunegate run `{r['run_id']}` — {status}", ""]
    model = r.get("model") or {}
    if model.get("version"):
        parts.append(f"Model **{model['name']}** version **{model['version']}**, aliases: "
                     f"{', '.join('@' + a for a in model.get('aliases', [])) or 'none'}.")
    if r.get("blocked_by"):
        parts += ["", "**Blocked by:**", *[f"- {b}" for b in r["blocked_by"]]]
    if r.get("error"):
        parts += ["", f"**Error:** {r['error']}"]
    gates = r.get("gates")
    if gates:
        parts += ["", f"## Gates (`{Path(r.get('gates_file') or 'gates.yaml').name}`)",
                  _table(["gate", "metric", "value", "op", "threshold", "baseline", "result"], _gate_rows(gates))]
    c = r.get("counts", {})
    if c:
        parts += ["", "## Data", _table(["what", "count"], [[k.replace("_", " "), v] for k, v in c.items()
                                                          if not isinstance(v, dict)])]
        if c.get("pii_entities"):
            parts += ["", "PII entities scrubbed: " + ", ".join(f"{k} {v}" for k, v in c["pii_entities"].items())]
    ds = r.get("dataset") or {}
    if ds.get("canary_documents"):
        parts += ["", f"Canaries: {ds['canary_documents']} canary texts were inserted into the training token stream "
                      "at packing time. They are not in the curated snapshot, so the data contracts (curated and "
                      "training split) validate the documents without them; the held-out split never has them."]
    snaps = r.get("snapshots", {})
    if snaps:
        parts += ["", "## Snapshots", _table(["stage", "rows", "fingerprint", "reused"],
                                             [[k, s["rows"], s["fingerprint"][:16], s["reused"]] for k, s in snaps.items()])]
    for contract in r.get("contracts", []):
        rows = [[e["expectation"], e.get("column"), "pass" if e["success"] else "FAIL",
                 e.get("observed") if e.get("observed") is not None else e.get("unexpected_count")]
                for e in contract["expectations"]]
        verdict = "passed" if contract["passed"] else "FAILED"
        parts += ["", f"## {contract['kind'].capitalize()} contract `{Path(contract['suite']).name}` — {verdict}",
                  _table(["expectation", "column", "result", "observed / unexpected"], rows)]
    t = r.get("training")
    if t:
        parts += ["", "## Training", _table(["method", "steps", "first loss", "final loss", "tokens/s", "resumed from",
                                             "wall s", "reused"],
                                            [[t.get("method", "lora"), t["steps"], t["first_loss"], t["final_loss"],
                                              t["mean_tokens_per_s"], t["resumed_from"], t["wall_s"], t.get("reused", False)]])]
        if t.get("reused"):
            parts += ["", "Training was reused: an earlier run trained exactly this job (same base model, data blocks "
                          "and settings); its adapter and metrics were copied."]
        if t.get("final_eval_loss") is not None:
            parts += ["", f"Held-out loss at the end of training: {_fmt(t['final_eval_loss'])}"]
        if t.get("reused"):
            parts += ["", "Training reused: an identical job (same base model, data, tokenizer and settings) had "
                          "been trained to the end before; its result was copied from the training cache."]
        if r.get("loss_curve"):
            parts += ["", f"![loss curve]({Path(r['loss_curve']).name})"]
    ev = r.get("evaluation")
    if ev:
        parts += evaluation_section(ev)
    if r.get("stage_seconds"):
        parts += ["", "## Stage times", _table(["stage", "seconds"], [[k, v] for k, v in r["stage_seconds"].items()])]
    return "\n".join(parts) + "\n"


def write(report: dict[str, Any], run_dir: Path) -> tuple[Path, Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    js, md = run_dir / "report.json", run_dir / "report.md"
    js.write_text(json.dumps(report, indent=2, default=str))
    md.write_text(markdown(report))
    return js, md


def files(run_dir: Path) -> list[Path]:
    """What goes to the MLflow run beside the model: the report and its charts."""
    return [p for p in (run_dir / "report.md", run_dir / "report.json", *sorted(run_dir.glob("*.png"))) if p.is_file()]
