"""The run report: report.json for machines, report.md (with PNG charts) for the reviewer.

Sections: verdict and what blocked it, gates (value, op, threshold, baseline, the bootstrap interval of the
difference, result) and which gate decided, data counts (and the gateway's corrections added), snapshots,
contracts, training (loss curve with the held-out loss where the trainer measured it), then the evaluation
(tasks/report/evaluation.py): every metric for base, candidate and champion with a chart, the differences with
their intervals, the answers side by side, PII probe, extraction probe and canaries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.report.evaluation import FAMILIES, decision_section, evaluation_section, models_of
from tasks.report.format import fmt as _fmt
from tasks.report.format import table as _table

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


def chart_title(evaluation: dict[str, Any]) -> str:
    """"Candidate vs champion vN vs base", or without the champion when there was none to compare with."""
    order = {"candidate": 0, "champion": 1, "base": 2}
    labels = sorted((label for label, _ in models_of(evaluation)), key=lambda x: order.get(x.split()[0], 3))
    return " vs ".join(labels).capitalize()


def metrics_chart(evaluation: dict[str, Any], out: Path) -> Path | None:
    """metrics_vs_champion.png: candidate vs champion (when there is one) vs base, one panel per metric family
    measured, each bar labelled with its value."""
    models = models_of(evaluation)
    panels = [(title, [m for m in ms if any(m in s for _, s in models)], log) for title, ms, log in FAMILIES]
    panels = [p for p in panels if p[1]]
    if not models or not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.6), dpi=110, squeeze=False)
    width = 0.8 / len(models)
    for ax, (title, names, log) in zip(axes[0], panels):
        values = []
        for i, (label, scores) in enumerate(models):
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(names))]
            heights = [float(scores.get(n, float("nan"))) for n in names]
            values += heights
            bars = ax.bar(xs, heights, width, label=label)
            ax.bar_label(bars, fmt="%.3g", fontsize=6)  # a count of 0 is a label, not an invisible bar
        ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 1 else 0, ha="right" if len(names) > 1 else "center")
        ax.set_title(title, fontsize=8)
        if values and all(v == 0 for v in values if v == v):  # a panel of zeros says so, not an empty frame
            ax.text(0.5, 0.5, "0 for every model", transform=ax.transAxes, ha="center", va="center", fontsize=8,
                    color="0.35")
        positive = [v for v in values if v == v and v > 0]
        if log and positive:
            ax.set_yscale("log")
            ax.set_ylim(bottom=min(positive) / 2)  # every bar rises above the axis, the smallest too
        elif all(v >= 0 for v in values if v == v):  # counts and scores: from 0, with room for the labels
            ax.set_ylim(0, max(max(positive, default=0) * 1.15, 1))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(chart_title(evaluation), fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _gate_rows(gates: list[dict]) -> list[list[Any]]:
    rows = []
    for g in gates:
        baseline = g["baseline"] if g.get("baseline_value") is None else f"{g['baseline']} ({_fmt(g['baseline_value'])})"
        if g.get("measured", True):
            result = "pass" if g["passed"] else "FAIL"
        else:
            result = "not measured" if g["passed"] else "FAIL (not measured)"
        d = g.get("delta")
        interval = f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" if d else "—"
        rows.append([g["name"], g["metric"], g.get("eval_set", "frozen"), g.get("value"), g["op"], g.get("threshold"),
                     baseline, interval, result])
    return rows


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
    if r.get("stopped_at"):
        kind = r["stopped_at"].removeprefix("contract_")
        parts += ["", f"The run stopped at the {kind} contract, before training (`contract.on_failure: stop`): "
                      "nothing was trained or registered. With `contract.on_failure: continue` a run trains, "
                      "evaluates and registers its model as @challenger despite a failed contract."]
    if r.get("error"):
        parts += ["", f"**Error:** {r['error']}"]
    gates = r.get("gates")
    if gates:
        parts += ["", f"## Gates (`{Path(r.get('gates_file') or 'gates.yaml').name}`)",
                  _table(["gate", "metric", "set", "value", "op", "threshold", "baseline", "difference [interval]",
                          "result"], _gate_rows(gates))]
        parts += decision_section(r)
    c = r.get("counts", {})
    if c:
        parts += ["", "## Data", _table(["what", "count"], [[k.replace("_", " "), v] for k, v in c.items()
                                                          if not isinstance(v, dict)])]
        if c.get("quality_filters"):
            parts += ["", "Quality filters: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in c["quality_filters"].items())]
        if c.get("pii_entities"):
            parts += ["", "PII entities scrubbed: " + ", ".join(f"{k} {v}" for k, v in c["pii_entities"].items())]
    parts += history_lines(r.get("history"))
    parts += corrections_lines(r.get("corrections"))
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
        for e in contract["expectations"]:
            if e.get("examples"):
                parts += ["", f"Documents failing `{e['expectation']}`" + (f" on `{e['column']}`" if e.get("column") else "")
                          + f" (first {len(e['examples'])}; matched values masked):",
                          *[f"- `{x['source']}` (doc `{x['doc_id'][:12]}`): {x['value']}" for x in e["examples"]]]
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
        if r.get("loss_curve"):
            parts += ["", f"![loss curve]({Path(r['loss_curve']).name})"]
    ev = r.get("evaluation")
    if ev:
        parts += evaluation_section(ev, r.get("eval_set"))
    parts += reuse_section(r)
    parts += cost_section(r)
    if r.get("lineage"):
        parts += ["", r["lineage"].rstrip("\n")]
    return "\n".join(parts) + "\n"


def cost_section(r: dict[str, Any]) -> list[str]:
    """Per stage: wall, CPU and GPU seconds and peak memory (the run's process tree); the totals and the estimate."""
    if not r.get("usage"):
        if r.get("stage_seconds"):
            return ["", "## Stage times", _table(["stage", "seconds"], [[k, v] for k, v in r["stage_seconds"].items()])]
        return []
    rows = [[stage, u["wall_s"], u["cpu_s"], u["gpu_s"], u["peak_memory_mb"]] for stage, u in r["usage"].items()]
    out = ["", "## Cost", _table(["stage", "wall s", "CPU s", "GPU s", "peak memory MiB"], rows)]
    c = r.get("cost")
    if c:
        out += ["", f"In all: {c['cpu_seconds']} CPU-seconds, {c['gpu_seconds']} GPU-seconds, peak memory "
                    f"{c['peak_memory_mb']} MiB, {c['tokens']} tokens trained on; estimated cost **{c['cost_estimate']} "
                    f"{c['currency']}** (the config's `cost` rates per CPU-hour and GPU-hour)."]
    return out


def history_lines(h: dict[str, Any] | None) -> list[str]:
    """One line on the dataset's history: which champion's training data joined the new data, or why none did."""
    if not h:
        return []
    line = f"Dataset `{h['dataset']}` ({h['mode']}): {h['why']}."
    if h.get("merged"):
        [p] = h["parents"]
        line += (f" Parent snapshot `{p['fingerprint'][:16]}` ({p['model']} v{p['version']}, read from "
                 f"`{p['stage']}/{Path(p['snapshot']).name}`); outside the retention window "
                 f"{h.get('parent_older_than_window', 0) + h.get('parent_over_size', 0)}, replaced by a new version "
                 f"{h.get('parent_replaced_by_new', 0)}; repeated documents are removed by dedup.")
    return ["", line]


def corrections_lines(c: dict[str, Any] | None) -> list[str]:
    """One line on the gateway's corrections (``data.corrections``): how many joined the data, from where, which
    versions' answers they correct and the file's sha256; or that there were none."""
    if not c:
        return []
    if not c.get("count"):
        return ["", f"Corrections from the gateway (`data.corrections`): none accepted in `{c['traffic']}` "
                    f"(min rating {_fmt(c['min_rating'])}), so none were added."]
    versions = ", ".join(f"v{v}" for v in c.get("versions") or []) or "unknown versions"
    return ["", f"Corrections from the gateway (`data.corrections`): {c['count']} corrected answers of {versions} "
                f"joined the data as instruction records (`{Path(c['file']).name}`, sha256 `{c['sha256'][:16]}`), "
                "through dedup, PII scrubbing and the contracts like the other data; the response ids are in "
                "report.json."]


def reuse_section(r: dict[str, Any]) -> list[str]:
    """What this run took from earlier runs instead of redoing it, and about how long that work took."""
    lines = []
    snaps = [k for k, s in (r.get("snapshots") or {}).items() if s.get("reused")]
    if snaps:
        saved = sum((r["snapshots"][k].get("seconds") or 0) for k in snaps)
        lines.append(f"- snapshots: {', '.join(snaps)}: same inputs, parameters and code as an earlier run "
                     f"(about {saved:.0f} s of work not redone)")
    ev = r.get("evaluation") or {}
    if ev.get("reused"):
        saved = sum((ev.get("saved_seconds") or {}).values())
        lines.append(f"- evaluation: {', '.join(ev['reused'])}: from the evaluation cache, the same model scored on the "
                     f"same held-out data before (about {saved:.0f} s)")
    t = r.get("training")
    if t and t.get("reused"):
        lines.append(f"- training: copied from the training cache, an identical job trained before "
                     f"(about {t['wall_s']:.0f} s)")
    elif t and lines:  # a rerun: say why training did not come from a cache too
        lines.append("- training: trained again. With `train.reuse: true` a run whose base model, data blocks, "
                     "tokenizer and settings match an earlier finished training copies its adapter instead")
    if not lines:
        return []
    return ["", "## Reused from earlier runs", *lines]


def with_inline_images(md: str, folder: Path) -> str:
    """The Markdown with each image beside it (``![alt](name.png)``) embedded as a data URI: a copy that
    shows its plots where no file beside it can be reached (the Prefect artifact)."""
    import base64
    import re

    def inline(m: re.Match) -> str:
        path = Path(folder) / m.group(2)
        if "/" in m.group(2) or not path.is_file():
            return m.group(0)
        return f"![{m.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", inline, md)


def write(report: dict[str, Any], run_dir: Path) -> tuple[Path, Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    js, md = run_dir / "report.json", run_dir / "report.md"
    js.write_text(json.dumps(report, indent=2, default=str))
    md.write_text(markdown(report))
    return js, md


def files(run_dir: Path) -> list[Path]:
    """What goes to the MLflow run beside the model: the report, its charts and the config it ran with."""
    return [p for p in (run_dir / "report.md", run_dir / "report.json", run_dir / "config.yaml",
                        *sorted(run_dir.glob("*.png"))) if p.is_file()]
