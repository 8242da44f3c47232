"""`tunegate reproduce MODEL_REF`: train a registered version again from what it recorded, and compare.

From the version's tags, its run's report and its run's config: the training snapshot (found by fingerprint), the
tokenizer and base model (made or found by the pipeline's own code, then checked against the recorded hashes),
the split with the same frozen evaluation set kept out and, for a cumulative dataset, the same new-data part, the
same training settings and seed, with ``train.reuse`` off so it really trains. Then every tensor of the new
adapter is compared with the registered adapter's (downloaded, its digest checked): on CPU they are identical
bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.snapshot import SnapshotRef
from tasks.core.snapshot_index import Index
from tasks.core.state import StatePaths
from tasks.registry.version_lineage import resolve, run_report


class CannotReproduce(LookupError):
    """Something the version recorded is gone or differs (a removed snapshot, another tokenizer or base)."""


@dataclass
class Reproduction:
    model: str
    version: str
    tensors: int = 0
    differing: list[str] = field(default_factory=list)
    max_abs_diff: float = 0.0
    steps: int = 0
    seconds: float = 0.0
    adapter: str = ""
    checked: list[str] = field(default_factory=list)  # what was verified on the way

    @property
    def identical(self) -> bool:
        return self.tensors > 0 and not self.differing


def _snapshot(index: Index, fingerprint: str, what: str) -> SnapshotRef:
    found = index.find(fingerprint)
    if not found:
        raise CannotReproduce(f"the {what} snapshot {fingerprint[:16]} is not in this state folder (removed by "
                              "tunegate gc, or made elsewhere)")
    m = index.manifests[found[0]]  # read once by the index
    return SnapshotRef(path=str(found[0]), fingerprint=fingerprint, rows=m["rows"], stage=m["stage"], reused=True)


def compare_adapters(new: Path, registered: Path) -> tuple[int, list[str], float]:
    """(tensors compared, names that differ, largest absolute difference) over the adapters' safetensors files."""
    import torch
    from safetensors.torch import load_file

    a, b = {}, {}
    for folder, into in ((new, a), (registered, b)):
        for f in sorted(Path(folder).glob("*.safetensors")):
            into.update(load_file(str(f)))
    differing = sorted(set(a) ^ set(b))
    worst = 0.0
    for name in sorted(set(a) & set(b)):
        if a[name].shape != b[name].shape or a[name].dtype != b[name].dtype:
            differing.append(name)
        elif not torch.equal(a[name], b[name]):
            differing.append(name)
            worst = max(worst, float((a[name].float() - b[name].float()).abs().max()))
    return len(set(a) | set(b)), differing, worst


def reproduce(c, tracking_uri: str, state: StatePaths, model: str, ref: str, config, out: Path,
              echo=print) -> Reproduction:
    """Train ``model`` ``ref`` again into ``out`` with ``config`` (its run's) and compare the adapters."""
    from tasks.registry.artifacts import model_artifacts
    from tasks.train import dataset, tokenizer
    from tasks.train import model as base_model
    from tasks.train.train import TrainJob, run_training

    v = resolve(c, model, ref)
    tags, result = dict(v.tags or {}), Reproduction(model, str(v.version))
    report = run_report(c, state, tags.get("tunegate.run_id"), v.run_id) or {}
    if not report.get("eval_set") or not report.get("training"):
        raise CannotReproduce(f"{model} v{v.version}: its run's report (runs/{tags.get('tunegate.run_id')}/report.json "
                              "or the MLflow run's report/report.json) is missing what it trained on")
    index = Index(state.snapshots)
    curated = _snapshot(index, tags["snapshot_fingerprint"], "training")
    result.checked.append(f"training snapshot {curated.fingerprint[:16]} ({curated.rows} documents)")
    tok = tokenizer.prepare(curated, config.tokenizer, config.model.base_model, state.tokenizers, state.models)
    if tok.content_hash != tags.get("tokenizer_hash"):
        raise CannotReproduce(f"the tokenizer made now ({tok.content_hash[:16]}) is not the recorded one "
                              f"({str(tags.get('tokenizer_hash'))[:16]})")
    result.checked.append(f"tokenizer {tok.content_hash[:16]}")
    base = base_model.prepare(config.model, tok.path, tok.content_hash, state.models)
    if base.fingerprint != tags.get("base_model_fingerprint"):
        raise CannotReproduce(f"the base model found now ({base.fingerprint[:16]}) is not the recorded one "
                              f"({str(tags.get('base_model_fingerprint'))[:16]})")
    result.checked.append(f"base model {base.fingerprint[:16]}")
    eval_set = report["eval_set"]
    keep_out = None if eval_set.get("frozen_by_this_run") else eval_set.get("path")
    history = report.get("history") or {}
    new_data = _snapshot(index, history["new"], "new data").path if history.get("merged") else None
    data = dataset.prepare(curated, tok.path, config.train.seq_len, config.split, out / "data", config.canaries,
                           config.train.completion_only, keep_out, new_data)
    if data.train_tokens != report["dataset"]["train_tokens"]:
        raise CannotReproduce(f"the split packs {data.train_tokens} training tokens, the run packed "
                              f"{report['dataset']['train_tokens']}")
    result.checked.append(f"split: {data.blocks} blocks, {data.train_tokens} training tokens")
    job = TrainJob(settings=config.train.model_copy(update={"reuse": False}), base_model=base.path,
                   tokenizer=tok.path, train_blocks=data.train_blocks, loss_mask=data.loss_mask,
                   eval_texts=data.eval_texts, out_dir=str(out / "train"))
    started = time.perf_counter()
    trained = run_training(job, state.torch_extensions, echo=echo, cache_dir=None)
    result.steps, result.seconds, result.adapter = trained.steps, round(time.perf_counter() - started, 1), trained.adapter
    registered = model_artifacts(tracking_uri, model, str(v.version), out / "registered")
    result.checked.append("registered folders' sha256 (artifact_digests)")
    result.tensors, result.differing, result.max_abs_diff = compare_adapters(Path(trained.adapter),
                                                                             Path(registered["adapter"]))
    return result
