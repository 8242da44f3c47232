"""The registered model: an MLflow pyfunc carrying the base model, the LoRA adapter and the tokenizer.

The adapter is merged into the base at load time. (MLflow's transformers flavor saves PEFT weights under
names that reload as random, so it is not used for adapters.)
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc


class CausalLMWithAdapter(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import tasks  # noqa: F401  (offline environment)
        from transformers import AutoTokenizer

        from tasks.evaluate import load_model

        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["tokenizer"])
        model = load_model(context.artifacts["base"], context.artifacts.get("adapter"))
        self.model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

    def predict(self, context, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        """Continuations of the prompts: a list of strings, or a DataFrame with a 'prompt' column."""
        import torch

        params = params or {}
        if hasattr(model_input, "columns"):
            prompts = list(model_input["prompt"] if "prompt" in model_input.columns else model_input.iloc[:, 0])
        elif isinstance(model_input, str):
            prompts = [model_input]
        else:
            prompts = list(model_input)
        max_new = int(params.get("max_new_tokens", 48))
        temperature = float(params.get("temperature", 0.0))
        torch.manual_seed(int(params.get("seed", 0)))
        outputs = []
        for prompt in prompts:
            ids = self.tokenizer(str(prompt), return_tensors="pt", add_special_tokens=False)["input_ids"]
            if ids.shape[1] == 0:
                ids = torch.tensor([[self.tokenizer.eos_token_id]])
            with torch.no_grad():
                gen = self.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                    do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                    top_p=None, top_k=None, pad_token_id=self.tokenizer.pad_token_id,
                )
            outputs.append(self.tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
        return outputs
