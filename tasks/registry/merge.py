"""Merge a trained LoRA adapter into its base model: one plain Hugging Face model folder (with the tokenizer).

The merged folder loads with ``AutoModelForCausalLM.from_pretrained`` alone (no PEFT), e.g. for serving or
export. Prefix-tuning adapters have no weights to fold in and cannot be merged; a full fine-tune already is
a whole model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tasks.train.trainer.artifacts import is_full_model


class MergeError(ValueError):
    pass


def merge_adapter(base: str, adapter: str, out: Path) -> Path:
    """Write base + adapter, merged, to ``out`` (config, safetensors, tokenizer); returns ``out``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir, out = Path(adapter), Path(out)
    if is_full_model(adapter_dir):
        raise MergeError(f"{adapter_dir} is already a full model (train.method full): nothing to merge")
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise MergeError(f"{adapter_dir}: no adapter_config.json (not a PEFT adapter folder)")
    peft_type = json.loads(config_file.read_text()).get("peft_type")
    if peft_type != "LORA":
        raise MergeError(f"{adapter_dir}: a {peft_type} adapter has no weights to merge (only LoRA adapters merge)")

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True
    tokenizer_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else Path(base)

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(tokenizer_src)).save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
