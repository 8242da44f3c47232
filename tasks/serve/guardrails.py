"""Checks on the serving path, before a prompt reaches the model: size limits and the clean stage's
prompt-injection patterns (tasks/data/quality/injection.py). A refused request gets a clear 400 answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.data.quality.injection import PROMPT_RULES, matches


class GuardrailSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_prompt_chars: int = Field(16_000, ge=1, description="longer prompts (all messages together) are refused")
    max_tokens: int = Field(512, ge=1, le=4096, description="the most tokens one request may ask for")
    prompt_injection: bool = Field(True, description="refuse prompts that match the prompt-injection patterns")


class Refused(Exception):
    """A request a guardrail turned away; ``guardrail`` names which."""

    def __init__(self, guardrail: str, message: str) -> None:
        super().__init__(message)
        self.guardrail = guardrail


def check_prompt(texts: list[str], max_tokens: int, settings: GuardrailSettings) -> None:
    """Raise Refused when the prompt (``texts``: the prompt, or each message's content) may not be served."""
    size = sum(len(t) for t in texts)
    if size > settings.max_prompt_chars:
        raise Refused("prompt_size", f"the prompt has {size} characters; this gateway takes at most "
                                     f"{settings.max_prompt_chars}")
    if max_tokens > settings.max_tokens:
        raise Refused("max_tokens", f"max_tokens {max_tokens} is above this gateway's limit of {settings.max_tokens}")
    if settings.prompt_injection and any(matches(PROMPT_RULES, [], t, t.lower()) for t in texts):
        raise Refused("prompt_injection", "the prompt looks like a prompt injection (it tries to override the "
                                          "model's instructions) and was refused")
