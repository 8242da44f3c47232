"""Models that share a base, loaded once: LoRA adapters are attached to one base and switched by name.

The evaluation scores the base model, this run's candidate and the current champion; most of the time all
three are the same base weights with zero, one or another LoRA adapter. Loading the base once and switching
adapters (``PeftModel.load_adapter`` / ``set_adapter``, ``disable_adapter`` for the base itself) saves two
model loads per run, and the answers are the same as from separately loaded models (tests/test_model_pool.py).

Bases are told apart by fingerprint (tasks.train.model.weights_fingerprint, or the one the caller already has),
not by path: the champion's base comes back from the registry as a copy in another folder. Anything that is
not a LoRA adapter on a known base (prefix tuning, a fully fine-tuned model, another base) is loaded on its
own, as tasks.evaluate.evaluate.load_model always did.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tasks.train.trainer.artifacts import is_full_model


def load_model(base: str, adapter: str | None = None):
    """A causal LM in eval mode: the base; with an adapter folder, the PEFT model on top of the base, or the
    folder itself when it holds a fully fine-tuned model (config.json and no adapter_config.json)."""
    import torch
    from transformers import AutoModelForCausalLM

    if adapter and is_full_model(adapter):
        return AutoModelForCausalLM.from_pretrained(adapter, dtype=torch.float32).eval()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def is_lora(adapter: str | None) -> bool:
    if not adapter or is_full_model(adapter):
        return False
    config = Path(adapter) / "adapter_config.json"
    return config.is_file() and json.loads(config.read_text()).get("peft_type") == "LORA"


class ModelPool:
    """One loaded base per fingerprint, with the LoRA adapters asked for so far attached by name."""

    def __init__(self) -> None:
        self._models: dict[str, object] = {}  # base fingerprint -> the base model, or a PeftModel around it
        self._fingerprints: dict[str, str] = {}  # base folder -> its weights fingerprint, hashed once
        self.loads = 0  # models read from disk (bases and stand-alone models), for tests and timing

    def fingerprint(self, base: str, known: str | None = None) -> str:
        """The base's weights fingerprint: ``known`` when the caller already has it, else hashed once per folder."""
        if known:
            return known
        if base not in self._fingerprints:
            from tasks.train.model import weights_fingerprint

            self._fingerprints[base] = weights_fingerprint(Path(base))
        return self._fingerprints[base]

    def _base(self, fingerprint: str, path: str):
        if fingerprint not in self._models:
            import torch
            from transformers import AutoModelForCausalLM

            self._models[fingerprint] = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            self.loads += 1
        return self._models[fingerprint]

    @contextmanager
    def use(self, name: str, base: str, adapter: str | None = None,
            fingerprint: str | None = None) -> Iterator[object]:
        """The model ``name`` (base + adapter) ready for inference, for the duration of the block."""
        if adapter and not is_lora(adapter):
            model = load_model(base, adapter)
            self.loads += 1
            try:
                yield model
            finally:
                del model
            return
        fingerprint = self.fingerprint(base, fingerprint)
        model = self._base(fingerprint, base)
        from peft import PeftModel

        if adapter is None:
            if isinstance(model, PeftModel):
                with model.disable_adapter():
                    yield model
            else:
                yield model
            return
        if not isinstance(model, PeftModel):
            model = PeftModel.from_pretrained(model, adapter, adapter_name=name).eval()
            self._models[fingerprint] = model
        elif name not in model.peft_config:
            model.load_adapter(adapter, adapter_name=name)
            model.eval()
        model.set_adapter(name)
        yield model
