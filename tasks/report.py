"""The run report: report.json for machines, report.md (with a loss-curve PNG) for the reviewer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def loss_curve(metrics: list[dict], out: Path) -> Path | None:
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.plot([m["step"] for m in metrics], [m["loss"] for m in metrics], lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


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
    c = r.get("counts", {})
    if c:
        parts += ["", "## Data", _table(["what", "count"], [[k.replace("_", " "), v] for k, v in c.items()
                                                          if not isinstance(v, dict)])]
        if c.get("pii_entities"):
            parts += ["", "PII entities scrubbed: " + ", ".join(f"{k} {v}" for k, v in c["pii_entities"].items())]
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
        parts += ["", "## Training", _table(["steps", "first loss", "final loss", "tokens/s", "resumed from", "wall s"],
                                            [[t["steps"], t["first_loss"], t["final_loss"], t["mean_tokens_per_s"],
                                              t["resumed_from"], t["wall_s"]]])]
        if r.get("loss_curve"):
            parts += ["", f"![loss curve]({Path(r['loss_curve']).name})"]
    ev = r.get("evaluation")
    if ev:
        rows = [[who, s["perplexity"], s["bits_per_byte"], s["tokens"]] for who, s in
                (("base", ev.get("base")), ("candidate", ev.get("candidate")),
                 (f"champion v{ev.get('champion_version')}", ev.get("champion"))) if s]
        parts += ["", "## Evaluation (held-out split)", _table(["model", "perplexity", "bits/byte", "tokens"], rows)]
    gates = r.get("gates")
    if gates:
        parts += ["", "## Gates", _table(["gate", "metric", "value", "op", "threshold", "baseline", "result"],
                                         [[g["name"], g["metric"], g["value"], g["op"], g["threshold"], g["baseline"],
                                           "pass" if g["passed"] else "FAIL"] for g in gates])]
    if r.get("stage_seconds"):
        parts += ["", "## Stage times", _table(["stage", "seconds"], [[k, v] for k, v in r["stage_seconds"].items()])]
    return "\n".join(parts) + "\n"


def write(report: dict[str, Any], run_dir: Path) -> tuple[Path, Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    js, md = run_dir / "report.json", run_dir / "report.md"
    js.write_text(json.dumps(report, indent=2, default=str))
    md.write_text(markdown(report))
    return js, md
