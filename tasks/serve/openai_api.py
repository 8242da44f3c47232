"""The OpenAI-compatible shapes the gateway speaks: completion and chat requests, their answers (whole, or
as server-sent-event chunks), the model list and errors. Fields OpenAI clients send that a local model has no
use for (``n`` above 1, ``logprobs``, penalties) are accepted where harmless and refused where they would
change the answer's meaning."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.evaluate.generation import SERVING_DEFAULTS, GenerationSettings


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send more fields than a local model uses

    model: str = Field(description="the registered model: NAME (its @champion), NAME@champion, NAME@challenger")
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = False
    user: str | None = Field(None, description="the caller's user or session key (sticky routing)")
    n: int = Field(1, ge=1, le=1)

    def generation(self) -> GenerationSettings:
        given = {"max_new_tokens": self.max_completion_tokens or self.max_tokens, "temperature": self.temperature,
                 "top_p": self.top_p, "seed": self.seed}
        return GenerationSettings(**{**SERVING_DEFAULTS.model_dump(), **{k: v for k, v in given.items() if v is not None}})


class CompletionRequest(_Request):
    prompt: str | list[str]

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: the text ones
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback`` (tunegate's own): a rating and/or a corrected answer for a response id."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, description="the id of the answer this is about")
    index: int = Field(0, ge=0, description="which choice of a completion with several prompts")
    rating: float | None = Field(None, ge=-1.0, le=1.0, description="1 good, -1 bad")
    correction: str | None = Field(None, min_length=1, max_length=32_000, description="the answer it should have given")

    @model_validator(mode="after")
    def _something(self) -> "FeedbackRequest":
        if self.rating is None and self.correction is None:
            raise ValueError("give a rating, a correction, or both")
        return self


def chat_prompt(tokenizer, messages: list[ChatMessage]) -> str:
    """The prompt for a conversation: the tokenizer's chat template when it has one, else one "role: text"
    line per message and an "assistant:" line to continue."""
    turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant:"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(answer_id: str, model: str, texts: list[str], finish: list[str], used: dict) -> dict[str, Any]:
    return {"id": answer_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "text": t, "finish_reason": f, "logprobs": None}
                        for i, (t, f) in enumerate(zip(texts, finish))], "usage": used}


def chat_completion(answer_id: str, model: str, text: str, finish: str, used: dict) -> dict[str, Any]:
    return {"id": answer_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": used}


def completion_chunk(answer_id: str, model: str, text: str, finish: str | None) -> dict[str, Any]:
    return {"id": answer_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}


def chat_chunk(answer_id: str, model: str, delta: dict, finish: str | None) -> dict[str, Any]:
    return {"id": answer_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def sse(payload: dict[str, Any] | str) -> str:
    """One server-sent event: ``data: <json>`` (or ``data: [DONE]``) and a blank line."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def error(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}
