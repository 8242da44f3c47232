"""Canary exposure: how much a model memorised the canaries planted in its training stream
(tasks/train/canaries.py), after Carlini et al., "The Secret Sharer" (USENIX Security 2019).

Per canary: is the secret extracted by greedy decoding from its prefix, where does its log-likelihood rank
among ``candidates`` random secrets of the same format, and the exposure in bits that rank gives.
"""

from __future__ import annotations

import math

from tasks.evaluate.generation import GenerationSettings, encode_prompts, generate, prompt_learning
from tasks.train.canaries import Canary, CanarySettings, candidate_secrets


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
