"""`tunegate lineage MODEL_REF`: where a registered version came from, complete enough to audit.

From the version's tags and the state folder's snapshots: the snapshot chain from the training snapshot back to
every raw file (path, size, sha256, from the ingest snapshots' ``inputs.jsonl``), through every parent of a
cumulative dataset; each stage's parameters and code version; the contracts and gates with their results (from
the run's report, local or logged to its MLflow run); the base model's and tokenizer's hashes and the artifact
digests; the gateway corrections it was trained on. A snapshot `tunegate gc` removed is named as missing.
``lineage`` returns a dict (``--json``); ``to_markdown`` renders it for people and for the run report.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.core.snapshot_index import Index
from tasks.core.state import StatePaths

_REF = re.compile(r"^(?:models:/)?(?P<name>[^/@]*)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))?$")


def parse_ref(ref: str, default_model: str) -> tuple[str, str]:
    """(model, version number or alias) of ``models:/name@alias``, ``models:/name/3``, ``name/3``, ``name@alias``,
    ``@alias`` or ``3`` (the default model's)."""
    text = ref.strip()
    if text.isdigit():
        return default_model, text
    m = _REF.match(text)
    if not m or not (m["version"] or m["alias"]):
        raise ValueError(f"{ref!r} is not a model reference: use NAME/VERSION, NAME@ALIAS, models:/NAME@ALIAS, "
                         "@ALIAS or a version number")
    return m["name"] or default_model, m["version"] or m["alias"]


def resolve(c, model: str, ref: str):
    """The ModelVersion ``ref`` (a number or an alias) names."""
    return c.get_model_version(model, ref) if ref.isdigit() else c.get_model_version_by_alias(model, ref)


def _json_tag(tags: dict, key: str, default: Any = None) -> Any:
    try:
        return json.loads(tags[key]) if key in tags else default
    except ValueError:
        return tags[key]


def run_report(c, state: StatePaths, run_id: str | None, mlflow_run_id: str | None) -> dict | None:
    """The run's report.json: from the state folder, else the copy logged to its MLflow run."""
    import tempfile

    local = state.run_dir(run_id) / "report.json" if run_id else None
    if local and local.is_file():
        return json.loads(local.read_text())
    if not mlflow_run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(Path(c.download_artifacts(mlflow_run_id, "report/report.json", tmp)).read_text())
        except Exception:  # not logged (a run that died), or the artifact store does not answer
            return None


def snapshot_chain(state: StatePaths, fingerprint: str) -> tuple[list[dict], list[dict], list[str]]:
    """(snapshots from the training one back to ingest, raw files, what could not be found)."""
    index = Index(state.snapshots)
    snapshots, raw, missing, seen = [], [], [], set()
    todo = [(fingerprint, None)]
    while todo:
        fp, child = todo.pop(0)
        if fp in seen:
            continue
        seen.add(fp)
        found = index.find(fp)
        if not found:
            if child is None or child["stage"] != "ingest":
                missing.append(f"snapshot {fp[:16]} (made into {child['stage'] if child else 'the training data'}) "
                               "is not stored: removed by tunegate gc, or made in another state folder")
            continue
        # the same content can come out of several stages (a dedup that removed nothing has its input's
        # fingerprint): one folder per stage, the stage that passed it on unchanged first
        by_stage: dict[str, Path] = {}
        for folder in found:
            by_stage.setdefault(index.manifests[folder].get("stage"), folder)
        for folder in sorted(by_stage.values(), key=lambda f: fp not in index.parents(f)):
            m = index.manifests[folder]
            entry = {"stage": m.get("stage"), "fingerprint": fp, "rows": m.get("rows"),
                     "created_at": m.get("created_at"), "code_version": m.get("code_version"), "params": m.get("params"),
                     "path": str(folder), "made_from": index.parents(folder)}
            snapshots.append(entry)
            if m.get("stage") == "ingest":
                listed = folder / "inputs.jsonl"
                if listed.is_file():
                    raw += [{**json.loads(line), "ingest": fp} for line in listed.read_text().splitlines() if line]
                else:
                    missing.append(f"the raw files of ingest snapshot {fp[:16]} (made before ingest listed its files)")
            todo += [(parent, entry) for parent in entry["made_from"] if parent != fp]
    return snapshots, raw, missing


def lineage(c, state: StatePaths, model: str, ref: str) -> dict[str, Any]:
    v = resolve(c, model, ref)
    tags = dict(v.tags or {})
    fingerprint = tags.get("snapshot_fingerprint", "")
    snapshots, raw, missing = snapshot_chain(state, fingerprint) if fingerprint else ([], [], ["no snapshot tag"])
    report = run_report(c, state, tags.get("tunegate.run_id"), v.run_id) or {}
    created = datetime.fromtimestamp(v.creation_timestamp / 1000, timezone.utc).isoformat() if v.creation_timestamp else None
    return {
        "model": model, "version": str(v.version), "aliases": list(v.aliases or []), "created": created,
        "status": tags.get("status"), "blocked_by": tags.get("blocked_by"), "run_id": tags.get("tunegate.run_id"),
        "mlflow_run_id": v.run_id, "dataset": tags.get("dataset"), "training_snapshot": fingerprint,
        "base_model": {"description": tags.get("base_model"), "fingerprint": tags.get("base_model_fingerprint")},
        "tokenizer_hash": tags.get("tokenizer_hash"), "artifact_digests": _json_tag(tags, "artifact_digests", {}),
        "history_parents": _json_tag(tags, "history_parents", []),
        "corrections": {k: tags[f"corrections{s}"] for k, s in (("count", ""), ("sha256", "_sha256"),
                                                                ("versions", "_versions")) if f"corrections{s}" in tags},
        "eval_set": tags.get("eval_set"), "eval_data": tags.get("eval_data"),
        "contracts": [{"kind": k["kind"], "suite": k.get("suite"), "passed": k["passed"], "rows": k.get("rows")}
                      for k in report.get("contracts") or []] or _json_tag(tags, "contracts", {}),
        "gates": [{key: g.get(key) for key in ("name", "metric", "op", "value", "threshold", "baseline",
                                                "baseline_value", "eval_set", "status")}
                  for g in report.get("gates") or []] or _json_tag(tags, "gates", {}),
        "snapshots": snapshots, "raw_files": raw, "missing": missing,
    }


def _cell(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(lin: dict[str, Any], max_files: int = 200, checks: bool = True) -> str:
    """The lineage for people: a heading per part, tables for gates, snapshots and raw files. ``checks=False``
    leaves out the contracts and gates (the run report, which has them in full)."""
    out = [f"## Lineage of {lin['model']} v{lin['version']}", "",
           f"- status **{lin['status']}**, aliases {', '.join('@' + a for a in lin['aliases']) or 'none'}, "
           f"registered {lin['created']} by run `{lin['run_id']}` (MLflow run `{lin['mlflow_run_id']}`)",
           f"- dataset `{lin['dataset']}`, training snapshot `{lin['training_snapshot'][:16]}`",
           f"- base model {lin['base_model']['description']} (fingerprint `{lin['base_model']['fingerprint']}`), "
           f"tokenizer `{lin['tokenizer_hash']}`",
           "- artifact sha256: " + ", ".join(f"{k} `{str(d)[:16]}`" for k, d in lin["artifact_digests"].items())]
    if lin["history_parents"]:
        out.append("- trained on the data of: " + ", ".join(f"{p.get('model')} v{p.get('version')}"
                                                           for p in lin["history_parents"]))
    if lin["corrections"]:
        out.append(f"- gateway corrections: {lin['corrections']}")
    if lin["eval_set"]:
        out.append(f"- evaluated on {lin['eval_set']}")
    if not checks:
        pass
    elif isinstance(lin["contracts"], list):
        out += ["", "Contracts: " + ", ".join(f"{k['kind']} {'passed' if k['passed'] else 'FAILED'}"
                                              for k in lin["contracts"])]
    else:
        out += ["", f"Contracts: {_cell(lin['contracts'])}"]
    if not checks:
        pass
    elif isinstance(lin["gates"], list) and lin["gates"]:
        out += ["", "| gate | metric | value | op | threshold | baseline | set | result |", "|---|---|---|---|---|---|---|---|"]
        for g in lin["gates"]:
            value = "" if g["value"] is None else f"{g['value']:.4g}"
            threshold = "" if g["threshold"] is None else f"{g['threshold']:.4g}"
            out.append(f"| {g['name']} | {g['metric']} | {value} | {g['op']} | {threshold} | {g['baseline'] or ''} | "
                       f"{g['eval_set'] or ''} | {g['status']} |")
    elif lin["gates"]:
        out += ["", f"Gates: {_cell(lin['gates'])}"]
    out += ["", "| stage | rows | fingerprint | code | made from | parameters |", "|---|---|---|---|---|---|"]
    for s in lin["snapshots"]:
        out.append(f"| {s['stage']} | {s['rows']} | `{s['fingerprint'][:16]}` | {s['code_version'] or ''} | "
                   f"{', '.join(f'`{p[:16]}`' for p in s['made_from'])} | {_cell(s['params'])[:300]} |")
    out += ["", f"Raw files ({len(lin['raw_files'])}):", "", "| source | bytes | sha256 |", "|---|---|---|"]
    for f in lin["raw_files"][:max_files]:
        gone = f" (forgotten {f['forgotten'][:10]})" if f.get("forgotten") else ""
        out.append(f"| {_cell(f.get('source'))}{gone} | {f.get('bytes', '')} | `{f.get('sha256') or f.get('commit') or ''}` |")
    if len(lin["raw_files"]) > max_files:
        out.append(f"| ... {len(lin['raw_files']) - max_files} more (`tunegate lineage --json`) | | |")
    if lin["missing"]:
        out += ["", "Not found:", *[f"- {m}" for m in lin["missing"]]]
    return "\n".join(out) + "\n"
