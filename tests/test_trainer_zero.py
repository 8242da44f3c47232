"""Data-parallel training: two processes under ZeRO-2 on CPU (gloo), held-out loss, merging the adapter.

Plus the DeepSpeed configs (infra/deepspeed/*.json, their "auto" values filled from the settings) and the
launch command lines (torchrun on one node, the deepspeed launcher with a hostfile).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.train.train import TrainJob, TrainSettings, command, read_metrics, run_training
from tasks.train.trainer import ds_config
from tasks.train.trainer.recipe import batch_indices

STEPS = 6


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_training):
    """(run folder of this module, tokenizer, base model, dataset): conftest's shared tiny set-up."""
    return (tmp_path_factory.mktemp("zero"), *tiny_training)


@pytest.fixture(scope="module")
def two_process(prepared, extensions_dir):
    root, tok, base, data = prepared
    settings = TrainSettings(max_steps=STEPS, micro_batch_size=4, seq_len=64, checkpoint_every=3, learning_rate=3e-3,
                             warmup_steps=1, modules_to_save=["lm_head"], zero_stage=2, num_processes=2,
                             threads_per_process=1, eval_every=4, eval_batches=2)
    j = TrainJob(settings=settings, base_model=base.path, tokenizer=tok.path, train_blocks=data.train_blocks,
                 eval_texts=data.eval_texts, out_dir=str(root / "two"))
    return j, run_training(j, extensions_dir)


def _loss(m, blocks: np.ndarray) -> float:
    import torch

    batch = torch.from_numpy(blocks.astype(np.int64))
    with torch.no_grad():
        return float(m(input_ids=batch, labels=batch).loss)


def test_two_processes_average_their_losses_and_save_the_adapter(prepared, two_process):
    from transformers import AutoModelForCausalLM

    _, _, base, data = prepared
    j, result = two_process
    assert result.world_size == 2 and result.steps == STEPS and result.device == "cpu"
    # two CPU processes all-reduce through DeepSpeed's shared-memory op (one process skips it: test_trainer_methods)
    assert "shm_comm" in (Path(result.adapter).parent / "train.log").read_text()
    adapter = Path(result.adapter)
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "tokenizer.json").is_file()
    rows = read_metrics(Path(result.metrics))
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert [r["tokens"] for r in rows] == [s * 4 * 2 * 64 for s in range(1, STEPS + 1)]
    # step 1 runs the base model (LoRA B starts at zero, lm_head's copy is the original): its logged loss is
    # the mean of what each rank saw on its own batch
    blocks = np.load(data.train_blocks)
    base_model = AutoModelForCausalLM.from_pretrained(base.path).eval()
    per_rank = [_loss(base_model, blocks[np.sort(batch_indices(1, 0, r, j.settings, 2, blocks.shape[0]))])
                for r in (0, 1)]
    assert abs(per_rank[0] - per_rank[1]) > 1e-3
    assert rows[0]["loss"] == pytest.approx(sum(per_rank) / 2, abs=1e-5)


def test_eval_loss_is_logged_on_its_steps(two_process):
    _, result = two_process
    rows = read_metrics(Path(result.metrics))
    assert [r["step"] for r in rows if "eval_loss" in r] == [4, STEPS]  # every 4 steps, and the last one
    assert all({"step", "loss", "lr", "tokens_per_s", "tokens"} <= set(r) for r in rows)
    assert result.final_eval_loss == rows[-1]["eval_loss"] and 0 < result.final_eval_loss < 20


def test_merged_model_gives_the_adapter_logits(prepared, two_process, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tasks.registry.merge import MergeError, merge_adapter

    _, _, base, data = prepared
    _, result = two_process
    merged_dir = merge_adapter(base.path, result.adapter, tmp_path / "merged")
    assert (merged_dir / "config.json").is_file() and (merged_dir / "tokenizer.json").is_file()
    assert not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base.path), result.adapter).eval()
    plain = AutoModelForCausalLM.from_pretrained(base.path).eval()
    batch = torch.from_numpy(np.load(data.train_blocks)[:3].astype(np.int64))
    with torch.no_grad():
        a, b, c = merged(input_ids=batch).logits, unmerged(input_ids=batch).logits, plain(input_ids=batch).logits
    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    assert float((a - c).abs().max()) > 1e-2  # the adapter (and the trained lm_head) did change the model
    with pytest.raises(MergeError, match="already a full model"):
        merge_adapter(base.path, str(merged_dir), tmp_path / "again")


# --- DeepSpeed configs and launch command lines (no training) ---

@pytest.mark.parametrize("name", ["zero0", "zero1", "zero2", "zero3", "zero2-offload", "zero3-offload"])
def test_every_shipped_config_fills_from_the_settings(name):
    stage = int(name[4])
    offload = name.endswith("-offload")
    s = TrainSettings(zero_stage=stage, offload_optimizer=offload, micro_batch_size=3, gradient_accumulation_steps=2,
                      max_grad_norm=0.5, precision="bf16")
    assert ds_config.config_path(s).name == f"{name}.json"
    raw = ds_config.read(s)
    filled = ds_config.fill(raw, s, world=4, device="cpu", ds_cpu_adam=False)
    assert filled["train_batch_size"] == 24 and filled["train_micro_batch_size_per_gpu"] == 3
    assert filled["gradient_accumulation_steps"] == 2 and filled["gradient_clipping"] == 0.5
    assert filled["bf16"]["enabled"] is True and ds_config.stage(filled) == stage
    assert ds_config.offloads_optimizer(filled) == offload
    assert "auto" not in json.dumps(filled)
    if offload:
        assert filled["zero_force_ds_cpu_optimizer"] is False
        assert filled["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False}


def test_an_explicit_config_overrides_and_may_not_contradict(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 16, "zero_optimization": {"stage": 1}}))
    s = TrainSettings(zero_stage=3, deepspeed_config=path, micro_batch_size=8)
    with pytest.raises(ds_config.DeepSpeedConfigError, match="train_micro_batch_size_per_gpu is 16 but the train "
                                                             "settings give 8"):
        ds_config.build(s, world=1, device="cpu", ds_cpu_adam=False)
    path.write_text(json.dumps({"zero_optimization": {"stage": 1}, "optimizer": {"type": "Adam"}}))
    with pytest.raises(ds_config.DeepSpeedConfigError, match="remove the 'optimizer' section"):
        ds_config.build(s, world=1, device="cpu", ds_cpu_adam=False)
    path.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    filled = ds_config.build(s, world=2, device="cpu", ds_cpu_adam=False)
    assert ds_config.stage(filled) == 1 and filled["train_batch_size"] == 16


def test_launch_commands(tmp_path):
    job = tmp_path / "job.json"
    cmd, env = command(job, TrainSettings(num_processes=1))
    assert cmd == [sys.executable, "-m", "tasks.train.trainer", str(job)] and env["WORLD_SIZE"] == "1"
    cmd, _ = command(job, TrainSettings(num_processes=2))
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc_per_node=2" in cmd
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node1 slots=8\nnode2 slots=8\n")
    cmd, _ = command(job, TrainSettings(num_processes=8, hostfile=hostfile))
    assert cmd == [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile), "--num_gpus=8",
                   "--master_port=29500", "--module", "tasks.train.trainer", str(job)]
