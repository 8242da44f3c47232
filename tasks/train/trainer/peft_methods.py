"""The model a job trains: LoRA, prefix tuning or QLoRA through PEFT, or every weight of the base model.

``train.method`` picks one; ``train.target_modules: auto`` picks LoRA's target layers from the base model's
architecture (``config.model_type``), falling back to PEFT's "all-linear".
"""

from __future__ import annotations

import os

from tasks.train.trainer.job import TrainJob, TrainSettings

_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_FUSED_QKV_MLP = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]

# the attention and MLP projections of each architecture (nn.Linear, or Conv1D for GPT-2 style models)
LORA_TARGETS: dict[str, list[str]] = {
    **{t: _LLAMA_LIKE for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                                "granite", "olmo", "olmo2", "stablelm", "smollm3")},
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_bigcode": ["c_attn", "c_proj", "c_fc"],
    "starcoder2": ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"],
    "gpt_neox": _FUSED_QKV_MLP,
    "falcon": _FUSED_QKV_MLP,
    "bloom": _FUSED_QKV_MLP,
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"],
}


def lora_targets(settings: TrainSettings, model_type: str) -> list[str] | str:
    if settings.target_modules != "auto":
        return settings.target_modules
    return LORA_TARGETS.get(model_type, "all-linear")


def qlora_unavailable() -> str | None:
    """Why QLoRA cannot run on this machine, or None (it needs a CUDA GPU and bitsandbytes)."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return "this machine has no GPU"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    return None


def build_model(job: TrainJob, device: str):
    """The trainable model, on the CPU (DeepSpeed moves it), with the non-trained weights frozen."""
    import torch
    from transformers import AutoModelForCausalLM

    s = job.settings
    torch.manual_seed(s.seed)
    if s.method == "qlora":
        return _qlora(job)
    model = AutoModelForCausalLM.from_pretrained(job.base_model, dtype=torch.float32)
    model.config.use_cache = False
    if s.method == "full":
        model.requires_grad_(True)
        return model
    from peft import get_peft_model

    return get_peft_model(model, peft_config(s, model.config.model_type))


def peft_config(s: TrainSettings, model_type: str):
    from peft import LoraConfig, PrefixTuningConfig

    if s.method == "prefix":
        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=s.num_virtual_tokens)
    return LoraConfig(
        r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout, target_modules=lora_targets(s, model_type),
        modules_to_save=s.modules_to_save or None, task_type="CAUSAL_LM",
    )


def _qlora(job: TrainJob):
    """4-bit NF4 base weights (bitsandbytes) on this process's GPU, LoRA adapters trained in full precision."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    s = job.settings
    why = qlora_unavailable()
    if why:
        raise RuntimeError(f"train.method=qlora needs a CUDA GPU and bitsandbytes ({why}): use method lora")
    compute = torch.bfloat16 if s.precision == "bf16" else torch.float32
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    model = AutoModelForCausalLM.from_pretrained(job.base_model, quantization_config=quant, dtype=compute,
                                                 device_map={"": local_rank})
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, peft_config(s.model_copy(update={"method": "lora"}), model.config.model_type))


def prefix_generation_inputs(peft_model, attention_mask) -> dict:
    """``cache`` and ``attention_mask`` for ``peft_model.base_model.generate`` with a prefix-tuning adapter.

    With transformers 5.x and PEFT 0.21, ``PeftModel.generate`` on a prefix-tuning model silently drops the
    prefix (transformers' generate builds its own ``cache`` and ignores PEFT's ``past_key_values``), so the
    text is the base model's. Passing the prefix as the starting cache, with the attention mask extended over
    the virtual tokens, generates what the trained model predicts:
    ``peft_model.base_model.generate(input_ids=ids, **prefix_generation_inputs(peft_model, mask), ...)``.
    """
    import torch

    n = attention_mask.shape[0]
    virtual = peft_model.peft_config[peft_model.active_adapter].num_virtual_tokens
    ones = torch.ones(n, virtual, dtype=attention_mask.dtype, device=attention_mask.device)
    return {"cache": peft_model.get_prompt(batch_size=n), "attention_mask": torch.cat([ones, attention_mask], dim=1)}
