"""Canaries: planted secrets that measure how much a model memorises its training data.

After Carlini et al., "The Secret Sharer" (USENIX Security 2019). Each canary is a sentence
"<prefix> <secret>": a prefix made distinct by a random identifier ("the access code for vault 7fk2 is")
and a secret of ``secret_digits`` random digits. ``canary_documents`` repeats each canary ``repeats`` times
as documents for the TRAINING split only (tasks/dataset.py inserts them); the evaluation then asks, per
canary and per model:

- extracted: does greedy decoding from the prefix reproduce the secret?
- rank: where the true secret's log-likelihood given the prefix (summed over the secret's tokens) falls among
  ``candidates`` random secrets of the same format; rank 1 = more likely than every candidate.
- exposure = log2(candidates + 1) - log2(rank), in bits: about 1 for a secret the model never saw (its rank is
  uniform), log2(candidates + 1) for a memorised one.

Everything is drawn from ``seed``: the same settings give the same canaries and the same candidate secrets.
"""

from __future__ import annotations

import json
import math
import random
import string
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tasks.generation import GenerationSettings, encode_prompts, generate, prompt_learning

TEMPLATES = (
    "the access code for vault {id} is",
    "the door pin of locker {id} is",
    "account {id} has the recovery number",
    "the secret key of project {id} is",
    "badge {id} opens with the code",
)
_ID_CHARS = string.ascii_lowercase + string.digits


class CanarySettings(BaseModel):
    """Planted canaries and how their memorisation is measured."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(0, ge=0, le=1000, description="canaries planted in the training split; 0 = off")
    repeats: int = Field(20, ge=1, le=100_000, description="copies of each canary in the training split")
    secret_digits: int = Field(6, ge=1, le=30, description="random digits in each secret")
    candidates: int = Field(1000, ge=1, le=1_000_000, description="random secrets the true one is ranked against")
    seed: int = Field(0, description="seed of the canaries and of the candidate secrets")


class Canary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str
    secret: str

    @property
    def text(self) -> str:
        return f"{self.prefix} {self.secret}"


def _secret(rng: random.Random, digits: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(digits))


def make_canaries(settings: CanarySettings) -> list[Canary]:
    """``settings.count`` canaries with distinct prefixes, drawn from ``settings.seed``."""
    rng = random.Random(f"canaries:{settings.seed}")
    out, prefixes = [], set()
    while len(out) < settings.count:
        ident = "".join(rng.choice(_ID_CHARS) for _ in range(4))
        prefix = rng.choice(TEMPLATES).format(id=ident)
        if prefix in prefixes:
            continue
        prefixes.add(prefix)
        out.append(Canary(prefix=prefix, secret=_secret(rng, settings.secret_digits)))
    return out


def canary_documents(canaries: list[Canary], repeats: int) -> list[str]:
    """Each canary's text ``repeats`` times, interleaved (c1, c2, …, c1, c2, …): documents for training only."""
    return [c.text for _ in range(repeats) for c in canaries]


def write_canaries(path: str | Path, canaries: list[Canary], settings: CanarySettings) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"settings": settings.model_dump(), "canaries": [c.model_dump() for c in canaries]}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_canaries(path: str | Path) -> tuple[list[Canary], CanarySettings]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"canaries file not found: {path}")
    data = json.loads(path.read_text())
    return [Canary(**c) for c in data["canaries"]], CanarySettings(**data["settings"])


def candidate_secrets(canary: Canary, settings: CanarySettings) -> list[str]:
    """Random secrets of the canary's format, distinct from each other and from the true one when the space
    of secrets allows (at most 10**digits - 1 of them), the same for every model."""
    digits = len(canary.secret)
    space = 10**digits - 1
    n = min(settings.candidates, space)
    rng = random.Random(f"candidates:{settings.seed}:{canary.prefix}")
    if space <= 4 * n:  # small space: sample without replacement from all the other secrets
        others = [s for s in (str(i).zfill(digits) for i in range(10**digits)) if s != canary.secret]
        return rng.sample(others, n)
    seen, out = {canary.secret}, []
    while len(out) < n:
        s = _secret(rng, digits)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _split_secret_tokens(tokenizer, prefix: str, secrets: list[str]) -> list[tuple[list[int], list[int]]]:
    """(context ids, secret ids) per secret: "<prefix> <secret>" is tokenized whole, as training saw it, after
    the start token; the secret's tokens are those that end after the prefix (the space and the digits), so a
    token that spans the boundary counts as the secret's."""
    enc = tokenizer([f"{prefix} {s}" for s in secrets], add_special_tokens=False, return_offsets_mapping=True)
    start = encode_prompts(tokenizer, [""])[0]
    out = []
    for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"]):
        cut = next((i for i, (_, end) in enumerate(offsets) if end > len(prefix)), len(ids))
        out.append((start + list(ids[:cut]), list(ids[cut:])))
    return out


def _pad_right(rows: list[list[int]], pad: int):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _full_sequences(model, context: list[int], suffixes: list[list[int]], pad: int) -> list[float]:
    """Sum of log P(suffix tokens | context), running context and suffix together for every row."""
    import torch

    ids, mask = _pad_right([context + s for s in suffixes], pad)
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
    token_lp = logp.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [i, t] = log P(ids[t+1] | ids[:t+1])
    return [float(token_lp[i, len(context) - 1 : len(context) + len(s) - 1].sum()) for i, s in enumerate(suffixes)]


def _cached_context(model, context: list[int], suffixes: list[list[int]], pad: int) -> list[float]:
    """The same sums with the shared context run once and its key/value cache repeated over the rows: the
    candidates cost only their own tokens (a few digits instead of the whole sentence)."""
    import torch

    n, ctx = len(suffixes), torch.tensor([context], dtype=torch.long)
    out = model(input_ids=ctx, attention_mask=torch.ones_like(ctx), use_cache=True)
    cache = out.cache  # transformers 5 names the key/value cache `cache` (formerly past_key_values)
    cache.batch_repeat_interleave(n)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each suffix's first token
    ids, mask = _pad_right(suffixes, pad)
    width = ids.shape[1]
    positions = torch.arange(len(context), len(context) + width).unsqueeze(0).expand(n, -1)
    logits = model(input_ids=ids, attention_mask=torch.cat([torch.ones(n, len(context), dtype=torch.long), mask], 1),
                   cache=cache, position_ids=positions, use_cache=True).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_lp = logp.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [i, t] = log P(ids[i, t+1] | …, ids[i, :t+1])
    return [float(first[s[0]] + token_lp[i, : len(s) - 1].sum()) for i, s in enumerate(suffixes)]


def secret_log_likelihoods(model, tokenizer, prefix: str, secrets: list[str], batch_size: int = 256,
                           cache: bool = True) -> list[float]:
    """log P(" " + secret | start token, prefix) for each secret, summed over the secret's tokens.

    With ``cache`` (and a model that is not a PEFT prompt-learning model), the start token and the prefix are
    run once per batch and only the secrets' tokens per row; ``cache=False`` runs whole sequences.
    """
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else encode_prompts(tokenizer, [""])[0][0]
    parts = _split_secret_tokens(tokenizer, prefix, secrets)
    score = _cached_context if cache and not prompt_learning(model) else _full_sequences
    out: list[float | None] = [None] * len(parts)
    groups: dict[tuple[int, ...], list[int]] = {}  # rows whose context tokens agree (all of them, as a rule)
    for i, (context, suffix) in enumerate(parts):
        if not suffix:
            raise ValueError(f"canary {prefix!r}: the secret {secrets[i]!r} has no tokens of its own")
        groups.setdefault(tuple(context), []).append(i)
    with torch.no_grad():
        for context, rows in groups.items():
            for b in range(0, len(rows), batch_size):
                chunk = rows[b : b + batch_size]
                for i, value in zip(chunk, score(model, list(context), [parts[i][1] for i in chunk], pad)):
                    out[i] = value
    return [float(v) for v in out]


def exposure(rank: int, candidates: int) -> float:
    return math.log2(candidates + 1) - math.log2(rank)


def measure(model, tokenizer, canaries: list[Canary], settings: CanarySettings) -> list[dict]:
    """Per canary: prefix, secret, extracted (greedy decoding reproduces the secret), rank, exposure, candidates."""
    if not canaries:
        return []
    secret_tokens = max(len(tokenizer(" " + c.secret, add_special_tokens=False)["input_ids"]) for c in canaries)
    greedy = GenerationSettings(max_new_tokens=secret_tokens + 1, temperature=0.0)
    continuations = generate(model, tokenizer, [c.prefix for c in canaries], greedy)
    results = []
    for canary, continuation in zip(canaries, continuations):
        others = candidate_secrets(canary, settings)
        scores = secret_log_likelihoods(model, tokenizer, canary.prefix, [canary.secret, *others])
        true = scores[0]
        rank = 1 + sum(s > true for s in scores[1:])
        results.append({
            "prefix": canary.prefix, "secret": canary.secret,
            "extracted": continuation.strip().startswith(canary.secret),
            "rank": rank, "exposure": exposure(rank, len(others)), "candidates": len(others),
        })
    return results
