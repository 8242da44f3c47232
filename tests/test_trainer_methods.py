"""Training methods beside LoRA: prefix tuning, full fine-tuning (with ZeRO-Offload), QLoRA's refusal on CPU;
LoRA's per-architecture targets; and reuse of an identical finished training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.train.train import TrainJob, TrainSettings, TrainingUnavailable, read_metrics, run_training
from tasks.train.trainer import reuse
from tasks.train.trainer.artifacts import is_full_model
from tasks.train.trainer.peft_methods import LORA_TARGETS, lora_targets

STEPS = 4


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_training):
    """(run folder of this module, tokenizer, base model, dataset): conftest's shared tiny set-up."""
    return (tmp_path_factory.mktemp("methods"), *tiny_training)


def job(prepared, name: str, **overrides) -> TrainJob:
    root, tok, base, data = prepared
    settings = TrainSettings(**{**dict(max_steps=STEPS, micro_batch_size=4, seq_len=64, checkpoint_every=STEPS,
                                       learning_rate=3e-3, warmup_steps=1, reuse=True), **overrides})
    return TrainJob(settings=settings, base_model=base.path, tokenizer=tok.path, train_blocks=data.train_blocks,
                    eval_texts=data.eval_texts, out_dir=str(root / name))


def held_out_loss(m, data) -> float:
    import numpy as np
    import torch

    batch = torch.from_numpy(np.load(data.train_blocks)[:4].astype(np.int64))
    with torch.no_grad():
        return float(m(input_ids=batch, labels=batch).loss)


@pytest.fixture(scope="module")
def prefix_run(prepared, extensions_dir):
    j = job(prepared, "prefix", method="prefix", num_virtual_tokens=4, learning_rate=3e-2)
    return j, run_training(j, extensions_dir, cache_dir=prepared[0] / "cache")


def test_prefix_tuning_trains_and_its_adapter_loads(prepared, prefix_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, _, base, data = prepared
    _, result = prefix_run
    assert result.method == "prefix" and result.steps == STEPS and not result.reused
    config = json.loads((Path(result.adapter) / "adapter_config.json").read_text())
    assert config["peft_type"] == "PREFIX_TUNING" and config["num_virtual_tokens"] == 4
    plain = AutoModelForCausalLM.from_pretrained(base.path).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base.path), result.adapter).eval()
    before, after = held_out_loss(plain, data), held_out_loss(tuned, data)
    assert after == after and abs(after - before) > 1e-4  # the prefix is read back and changes the model


def test_prefix_generation_uses_the_prefix(prepared, prefix_run):
    """generate() through prefix_generation_inputs scores the first token as the prefix model's forward does."""
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tasks.train.trainer.peft_methods import prefix_generation_inputs

    _, _, base, data = prepared
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base.path), prefix_run[1].adapter).eval()
    ids = torch.from_numpy(np.load(data.train_blocks)[:2, :12].astype(np.int64))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = tuned(input_ids=ids, attention_mask=mask).logits[:, -1]
        out = tuned.base_model.generate(input_ids=ids, **prefix_generation_inputs(tuned, mask), max_new_tokens=2,
                                        do_sample=False, output_scores=True, return_dict_in_generate=True)
        plain = AutoModelForCausalLM.from_pretrained(base.path).eval()(input_ids=ids).logits[:, -1]
    assert float((expected - plain).abs().max()) > 1e-5  # the prefix matters ...
    assert torch.allclose(out.scores[0], expected, atol=1e-5)  # ... and generation sees it
    assert out.sequences.shape == (2, 14)


def test_identical_training_is_reused(prepared, prefix_run, extensions_dir):
    j, first = prefix_run
    again = job(prepared, "prefix-again", method="prefix", num_virtual_tokens=4, learning_rate=3e-2, retries=3,
                threads_per_process=1)
    second = run_training(again, extensions_dir, cache_dir=prepared[0] / "cache")
    assert second.reused and not (Path(again.out_dir) / "train.log").exists()  # nothing was launched
    assert read_metrics(Path(second.metrics)) == read_metrics(Path(first.metrics))
    a, b = Path(first.adapter) / "adapter_model.safetensors", Path(second.adapter) / "adapter_model.safetensors"
    assert a.read_bytes() == b.read_bytes() and Path(second.adapter).parent == Path(again.out_dir)
    changed = job(prepared, "other", method="prefix", num_virtual_tokens=4, learning_rate=1e-2)
    assert reuse.key(changed) != reuse.key(j) == reuse.key(again)


def test_full_fine_tuning_with_optimizer_offload_saves_a_whole_model(prepared, extensions_dir):
    import torch
    from transformers import AutoModelForCausalLM

    _, _, base, data = prepared
    j = job(prepared, "full", method="full", zero_stage=2, offload_optimizer=True, learning_rate=1e-3)
    result = run_training(j, extensions_dir)
    assert result.method == "full" and result.steps == STEPS
    rows = read_metrics(Path(result.metrics))
    assert rows[-1]["loss"] < rows[0]["loss"]
    ds = json.loads((Path(j.out_dir) / "deepspeed_config.json").read_text())
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu" and ds["zero_force_ds_cpu_optimizer"] is False
    folder = Path(result.adapter)
    assert is_full_model(folder) and (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    tuned = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    plain = AutoModelForCausalLM.from_pretrained(base.path).eval()
    changed = [n for (n, p), (_, q) in zip(tuned.named_parameters(), plain.named_parameters()) if not torch.equal(p, q)]
    assert len(changed) == len(list(plain.parameters()))  # every weight trained
    assert held_out_loss(tuned, data) < held_out_loss(plain, data)
    assert not is_full_model(Path(job(prepared, "prefix").out_dir) / "adapter")


def test_qlora_on_cpu_is_refused_before_launch(prepared, extensions_dir, tmp_path):
    j = job(prepared, "qlora", method="qlora")
    with pytest.raises(TrainingUnavailable, match=r"^train.method=qlora needs a CUDA GPU and bitsandbytes "
                                                  r"\((this machine has no GPU|train.device is cpu)\): use method lora$"):
        run_training(j, extensions_dir, cache_dir=tmp_path / "cache")
    assert not Path(j.out_dir).exists() and not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="method qlora trains with zero_stage 0, 1 or 2"):
        TrainSettings(method="qlora", zero_stage=3)


def _tiny(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = {
        "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        "phi3": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, pad_token_id=0),
        "gpt2": dict(n_embd=32, n_layer=1, n_head=2),
        "gpt_neox": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        "falcon": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2),
        "opt": dict(hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2, word_embed_proj_dim=32),
    }[model_type]
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, vocab_size=64, **sizes))


@pytest.mark.parametrize("model_type", ["llama", "phi3", "gpt2", "gpt_neox", "falcon", "opt"])
def test_auto_lora_targets_name_real_projection_layers(model_type):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    m = _tiny(model_type)
    targets = lora_targets(TrainSettings(), m.config.model_type)
    assert targets == LORA_TARGETS[model_type]
    layers = {n.rsplit(".", 1)[-1] for n, mod in m.named_modules() if isinstance(mod, (torch.nn.Linear, Conv1D))}
    assert set(targets) <= layers, set(targets) - layers
    peft_model = get_peft_model(m, LoraConfig(target_modules=targets, task_type="CAUSAL_LM"))
    adapted = {n.split(".")[-2] for n, _ in peft_model.named_modules() if n.endswith(".lora_A")}
    assert adapted == set(targets)


def test_target_modules_explicit_and_fallback():
    assert lora_targets(TrainSettings(target_modules=["q_proj"]), "llama") == ["q_proj"]
    assert lora_targets(TrainSettings(target_modules="all-linear"), "llama") == "all-linear"
    assert lora_targets(TrainSettings(), "some_new_arch") == "all-linear"
    with pytest.raises(ValueError, match="modules_to_save applies to methods lora and qlora"):
        TrainSettings(method="full", modules_to_save=["lm_head"])


def test_one_cpu_process_does_not_compile_the_shared_memory_op(prepared, extensions_dir):
    """DeepSpeed's shared-memory all-reduce op is a C++ build of a minute or more on a cold machine; one
    process has nothing to reduce with, so it is neither built nor loaded (two processes build and use it:
    test_trainer_zero). DeepSpeed prints "... shm_comm ... built successfully" whenever it loads the op."""
    result = run_training(job(prepared, "one-process", max_steps=2, checkpoint_every=2), extensions_dir)
    assert result.steps == 2 and result.world_size == 1
    log = (Path(result.adapter).parent / "train.log").read_text()
    assert "step 2/2" in log and "shm_comm" not in log
