"""Training under DeepSpeed ZeRO-2 on CPU: SIGKILL mid-run, resume, identical per-step losses.

Also: a partial newest checkpoint (no completion marker) is skipped for the previous one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CORPUS
from tasks import dataset, model, snapshot, tokenizer
from tasks.records import make_document, to_table
from tasks.train import TrainJob, TrainSettings, command, read_metrics, run_training
from tasks.trainer import checkpoints

STEPS = 24


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    docs = [make_document(p.name, 0, p.read_text(), "text/plain", {}) for p in sorted((CORPUS / "plays").glob("*.txt"))]
    ref = snapshot.materialize(root / "snap", "curated", input_fingerprint="plays", params={}, code_version="t",
                               produce=lambda stats, extra: [to_table(docs)])
    tok = tokenizer.prepare(ref, tokenizer.TokenizerSettings(vocab_size=1024), None, root / "tok")
    base = model.prepare(model.ModelSettings(tiny=model.TinyModelSettings(hidden_size=64, layers=2, heads=2,
                                                                          intermediate_size=128)),
                         tok.path, tok.content_hash, root / "models")
    data = dataset.prepare(ref, tok.path, 64, dataset.SplitSettings(), root / "data")
    return root, tok, base, data


def job(prepared, name: str, **overrides) -> TrainJob:
    root, tok, base, data = prepared
    base_model = overrides.pop("base_model", base.path)
    settings = TrainSettings(**{**dict(max_steps=STEPS, micro_batch_size=4, seq_len=64, checkpoint_every=4,
                                       keep_checkpoints=3, learning_rate=3e-3, warmup_steps=2,
                                       modules_to_save=["lm_head"]), **overrides})
    return TrainJob(settings=settings, base_model=base_model, tokenizer=tok.path, train_blocks=data.train_blocks,
                    out_dir=str(root / name))


def losses(j: TrainJob) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(Path(j.out_dir) / "metrics.jsonl")}


def kill_after(j: TrainJob, steps: int, extensions_dir: Path) -> int:
    out = Path(j.out_dir)
    out.mkdir(parents=True)
    (out / "job.json").write_text(j.model_dump_json())
    cmd, env = command(out / "job.json", j.settings)
    env["TORCH_EXTENSIONS_DIR"] = str(extensions_dir)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(read_metrics(out / "metrics.jsonl")) >= steps:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return len(read_metrics(out / "metrics.jsonl"))


def test_sigkill_then_resume_repeats_the_losses(prepared, extensions_dir):
    a = job(prepared, "A")
    full = run_training(a, extensions_dir)
    assert full.steps == STEPS and full.resumed_from == 0
    reference = losses(a)

    b = job(prepared, "B")
    killed_at = kill_after(b, 14, extensions_dir)
    whole = [s for s, _ in checkpoints.newest_whole(Path(b.out_dir) / "checkpoints")]
    assert whole and max(whole) <= killed_at
    newest = Path(b.out_dir) / "checkpoints" / checkpoints.tag(max(whole))
    (newest / checkpoints.MARKER).unlink()  # as if the kill had come while this checkpoint was written

    resumed = run_training(b, extensions_dir)
    assert resumed.resumed_from == max(whole) - 4, "the partial checkpoint must be skipped for the previous one"
    got = losses(b)
    assert sorted(got) == sorted(reference)
    assert max(abs(got[s] - reference[s]) for s in reference) <= 1e-6
    assert "skipping checkpoint" in (Path(b.out_dir) / "train.log").read_text()
    kept = checkpoints.candidates(Path(b.out_dir) / "checkpoints")
    assert 0 < len(kept) <= 3


def test_adapter_is_saved_with_its_tokenizer(prepared, extensions_dir):
    a = Path(job(prepared, "A").out_dir) / "adapter"
    assert (a / "adapter_config.json").is_file() and (a / "adapter_model.safetensors").is_file()
    assert (a / "tokenizer.json").is_file()


def test_nonfinite_loss_stops_with_clear_error(prepared, extensions_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    root, _, base, _ = prepared
    broken = tmp_path / "broken-base"
    shutil.copytree(base.path, broken)
    weights = load_file(str(broken / "model.safetensors"))
    weights["model.norm.weight"][0] = float("nan")  # a damaged base checkpoint
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="training loss became nan at step 1: lower train.learning_rate"):
        run_training(job(prepared, "nan", base_model=str(broken)), extensions_dir)
