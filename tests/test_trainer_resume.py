"""Training under DeepSpeed ZeRO-2 and ZeRO-3 on CPU: SIGKILL mid-run, resume, identical per-step losses.

Also: a partial newest checkpoint (no completion marker) is skipped for the previous one; under ZeRO-3 the
saved adapter holds the whole trained tensors (checked against DeepSpeed's own consolidated checkpoint).
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

from tasks.train.train import TrainJob, TrainSettings, command, read_metrics, run_training
from tasks.train.trainer import checkpoints

STEPS = 24
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_training):
    """(run folder of this module, tokenizer, base model, dataset): conftest's shared tiny set-up."""
    return (tmp_path_factory.mktemp("train"), *tiny_training)


def job(prepared, name: str, **overrides) -> TrainJob:
    root, tok, base, data = prepared
    base_model = overrides.pop("base_model", base.path)
    settings = TrainSettings(**{**dict(max_steps=STEPS, micro_batch_size=4, seq_len=64, checkpoint_every=4,
                                       keep_checkpoints=3, learning_rate=3e-3, warmup_steps=2,
                                       modules_to_save=["lm_head"]), **overrides})
    return TrainJob(settings=settings, base_model=base_model, tokenizer=tok.path, train_blocks=data.train_blocks,
                    out_dir=str(root / name))


def zero_settings(root: Path, stage: int) -> dict:
    """ZeRO-3 from a config file with every weight partitioned (the default keeps small ones whole)."""
    if stage != 3:
        return {"zero_stage": stage}
    config = json.loads((ROOT / "infra" / "deepspeed" / "zero3.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = root / "zero3-partition-all.json"
    path.write_text(json.dumps(config))
    return {"zero_stage": 3, "deepspeed_config": path}


_UNINTERRUPTED: dict[int, TrainJob] = {}


def uninterrupted(prepared, stage: int, extensions_dir: Path) -> TrainJob:
    """An uninterrupted run (the reference losses) under ZeRO ``stage``: trained once, shared by the tests."""
    if stage not in _UNINTERRUPTED:
        a = job(prepared, f"A{stage}", **zero_settings(prepared[0], stage))
        full = run_training(a, extensions_dir)
        assert full.steps == STEPS and full.resumed_from == 0
        _UNINTERRUPTED[stage] = a
    return _UNINTERRUPTED[stage]


def losses(j: TrainJob) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(Path(j.out_dir) / "metrics.jsonl")}


def kill_after(j: TrainJob, steps: int, extensions_dir: Path) -> int:
    from tasks.train.trainer import reuse

    out = Path(j.out_dir)
    out.mkdir(parents=True)
    (out / "job.json").write_text(j.model_copy(update={"job_key": reuse.key(j)}).model_dump_json())  # as run_training
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


@pytest.mark.parametrize("stage", [2, 3], ids=["zero2", "zero3"])
def test_sigkill_then_resume_repeats_the_losses(prepared, extensions_dir, stage):
    a = uninterrupted(prepared, stage, extensions_dir)
    reference = losses(a)

    b = job(prepared, f"B{stage}", **zero_settings(prepared[0], stage))
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
    a = Path(uninterrupted(prepared, 2, extensions_dir).out_dir) / "adapter"
    assert (a / "adapter_config.json").is_file() and (a / "adapter_model.safetensors").is_file()
    assert (a / "tokenizer.json").is_file()


def test_zero3_adapter_holds_the_trained_tensors(prepared, extensions_dir):
    """The saved adapter equals the final weights DeepSpeed consolidates from its partitioned checkpoint."""
    a = uninterrupted(prepared, 3, extensions_dir)
    assert json.loads((Path(a.out_dir) / "deepspeed_config.json").read_text())["zero_optimization"] == {
        **json.loads((ROOT / "infra" / "deepspeed" / "zero3.json").read_text())["zero_optimization"],
        "stage3_param_persistence_threshold": 0}
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    ckpt = Path(a.out_dir) / "checkpoints"
    trained = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=checkpoints.tag(STEPS),
                                                       exclude_frozen_parameters=True)
    trained = {k.replace(".modules_to_save.default", "").replace(".default", ""): v for k, v in trained.items()}
    saved = load_file(str(Path(a.out_dir) / "adapter" / "adapter_model.safetensors"))
    assert sorted(saved) == sorted(trained)
    assert any("lora_A" in k for k in saved) and any("lm_head" in k for k in saved)
    for name, tensor in saved.items():
        assert tensor.numel() > 0 and tensor.shape == trained[name].shape, name
        assert torch.equal(tensor, trained[name].to(tensor.dtype)), name
    assert any(float(t.abs().sum()) > 0 for k, t in saved.items() if "lora_B" in k), "lora_B never trained"


def test_checkpoints_of_another_job_are_never_resumed(prepared, extensions_dir):
    """Issue 16: a reused run folder with another config resumed the old job's checkpoints. Each marker names the
    job that wrote it; another job (here: another learning rate) stops before loading, saying why."""
    full = uninterrupted(prepared, 2, extensions_dir)
    other = job(prepared, "other-job", learning_rate=1e-3)
    shutil.copytree(Path(full.out_dir) / "checkpoints", Path(other.out_dir) / "checkpoints")
    [(_, newest), *_] = checkpoints.newest_whole(Path(other.out_dir) / "checkpoints")
    assert json.loads((newest / checkpoints.MARKER).read_text())["job"]  # the writer's key is in the marker
    with pytest.raises(RuntimeError, match=r"training process exited 5: error: checkpoint .* was written by another "
                                           r"training job .*base model, data or settings differ"):
        run_training(other, extensions_dir)
    assert not (Path(other.out_dir) / "metrics.jsonl").exists() or not read_metrics(Path(other.out_dir) / "metrics.jsonl")


class _RunsCode:
    """What an attacker who can write the state folder would plant: unpickling it runs a shell command."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


def test_a_checkpoint_carrying_code_is_refused_not_run(prepared, extensions_dir, tmp_path):
    """Issue 16: resume read DeepSpeed's files with torch.load(weights_only=False), so a checkpoint whose file (and
    marker hashes) were rewritten ran arbitrary code. Now it is read weights-only: refused, skipped, never run."""
    import torch

    full = uninterrupted(prepared, 2, extensions_dir)
    same = job(prepared, "planted")  # the same job: its checkpoints are resumable
    shutil.copytree(Path(full.out_dir) / "checkpoints", Path(same.out_dir) / "checkpoints")
    [(step, newest), *_] = checkpoints.newest_whole(Path(same.out_dir) / "checkpoints")
    sentinel = tmp_path / "code-ran"
    states = newest / "mp_rank_00_model_states.pt"
    planted = torch.load(states, weights_only=True)
    planted["payload"] = _RunsCode(sentinel)
    torch.save(planted, states)
    marker = json.loads((newest / checkpoints.MARKER).read_text())
    checkpoints.mark_complete(newest, step, marker["job"])  # hashes rewritten too: the marker does not catch it
    assert checkpoints.problem(newest) is None

    resumed = run_training(same, extensions_dir)
    assert not sentinel.exists(), "unpickling the planted checkpoint ran its command"
    assert resumed.resumed_from == step - 4, "the planted checkpoint must be skipped for the previous one"
    log = (Path(same.out_dir) / "train.log").read_text()
    assert f"skipping checkpoint {newest.name}" in log and "posix.system" in log, log[-2000:]


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
