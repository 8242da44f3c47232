"""The model pool: one base in memory, LoRA adapters switched on it, answers equal to separately loaded models."""

from __future__ import annotations

import pytest

from tasks.evaluate.model_pool import ModelPool, is_lora, load_model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny Llama base, two LoRA adapters on it (one also training the output layer in full), a prefix-tuning
    adapter, and a second base with other weights."""
    import torch
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("pool")
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)

    def llama(seed: int):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()

    llama(0).save_pretrained(root / "base")
    llama(0).save_pretrained(root / "base-copy")  # the champion's base comes back from the registry as a copy
    llama(5).save_pretrained(root / "other-base")
    for name, seed, extra in (("a", 1, {}), ("b", 2, {"modules_to_save": ["lm_head"]})):
        torch.manual_seed(seed)
        lora = get_peft_model(llama(0), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                                                   **extra))
        if extra:
            with torch.no_grad():
                lora.base_model.model.lm_head.modules_to_save["default"].weight.mul_(1.5)
        lora.save_pretrained(root / name)
    prefix = get_peft_model(llama(0), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    prefix.save_pretrained(root / "prefix")
    return root


def _logits(model):
    import torch

    ids = torch.tensor([[1, 5, 9, 17, 33, 2]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapters_switched_on_one_base_answer_as_separate_models(folders):
    import torch

    base, a, b = str(folders / "base"), str(folders / "a"), str(folders / "b")
    expected = {name: _logits(load_model(base, adapter)) for name, adapter in (("base", None), ("a", a), ("b", b))}
    assert not torch.allclose(expected["a"], expected["base"]) and not torch.allclose(expected["b"], expected["a"])
    pool = ModelPool()
    for name, adapter in (("base", None), ("a", a), ("b", b), ("base", None), ("a", a), ("b", b)):
        with pool.use(name, base, adapter, fingerprint="same") as model:
            assert torch.allclose(_logits(model), expected[name], atol=1e-6), name
    assert pool.loads == 1  # the base was read from disk once


def test_bases_are_told_apart_by_fingerprint_not_path(folders):
    import torch

    pool = ModelPool()
    with pool.use("candidate", str(folders / "base"), str(folders / "a")) as model:
        first = _logits(model)
    with pool.use("champion", str(folders / "base-copy"), str(folders / "a")) as model:  # same weights, other folder
        assert torch.allclose(_logits(model), first, atol=1e-6)
    assert pool.loads == 1
    with pool.use("other", str(folders / "other-base")) as model:
        assert torch.allclose(_logits(model), _logits(load_model(str(folders / "other-base"))), atol=1e-6)
    assert pool.loads == 2


def test_what_is_not_a_lora_adapter_is_loaded_on_its_own(folders):
    import torch

    assert is_lora(str(folders / "a")) and not is_lora(str(folders / "prefix")) and not is_lora(None)
    pool = ModelPool()
    with pool.use("prefix", str(folders / "base"), str(folders / "prefix"), fingerprint="x") as model:
        got = _logits(model)
    assert torch.allclose(got, _logits(load_model(str(folders / "base"), str(folders / "prefix"))), atol=1e-6)
    assert pool.loads == 1
