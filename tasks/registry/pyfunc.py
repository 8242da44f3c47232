"""The registered model: an MLflow pyfunc carrying the base model, the adapter and the tokenizer.

The adapter is merged into the base at load time; an "adapter" folder that holds a whole fine-tuned model
(config.json, no adapter_config.json: training method "full") is loaded as the model itself. Generation is
tasks.evaluate.generation.generate, the same code the evaluation uses, so `models:/NAME@champion` continues a prompt
exactly as the run's report shows. (MLflow's transformers flavor saves PEFT weights under names that reload
as random, so it is not used for adapters.)
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc


def load_merged(base: str, adapter: str | None):
    """The model to serve: base + adapter merged, or the full fine-tuned model in the adapter folder
    (tasks.evaluate.evaluate.load_model tells them apart, as the evaluation does)."""
    from tasks.evaluate.evaluate import load_model

    model = load_model(base, adapter)
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def prompts_of(model_input: Any) -> list[str]:
    """A list of strings, one string, or a DataFrame with a 'prompt' column (else its first column)."""
    if hasattr(model_input, "columns"):
        column = model_input["prompt"] if "prompt" in model_input.columns else model_input.iloc[:, 0]
        return [str(p) for p in column]
    if isinstance(model_input, str):
        return [model_input]
    return [str(p) for p in model_input]


class CausalLMWithAdapter(mlflow.pyfunc.PythonModel):
    # the signature given at logging time (register.generation_signature) is the schema: MLflow's wrapping of
    # predict for type-hint validation (and its warning that there are no hints) is skipped
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        import tasks  # noqa: F401  (offline environment)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["tokenizer"])
        self.model = load_merged(context.artifacts["base"], context.artifacts.get("adapter")).eval()

    def predict(self, context, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        """Continuations of the prompts; params: max_new_tokens, temperature (0 = greedy), top_p, seed."""
        from tasks.evaluate.generation import SERVING_DEFAULTS, GenerationSettings, generate

        params = {k: v for k, v in (params or {}).items() if v is not None}
        settings = GenerationSettings(**{**SERVING_DEFAULTS.model_dump(), **params})
        return generate(self.model, self.tokenizer, prompts_of(model_input), settings)
