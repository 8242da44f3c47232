"""Perplexity and bits per byte of a causal LM on held-out documents.

Every token of every document is predicted exactly once: documents start after an EOS token (as in
training, where packing joins them with EOS) and are cut into windows that overlap by one token. Perplexity is
exp of the token-weighted mean loss; bits per byte divides the same total loss by the documents' UTF-8 size,
so it compares models whose tokenizers differ (a new run's tokenizer against the champion's).
"""

from __future__ import annotations

import math

from pydantic import BaseModel


class LMScore(BaseModel):
    perplexity: float
    bits_per_byte: float
    loss: float
    tokens: int
    bytes: int


def windows(ids: list[int], seq_len: int) -> list[list[int]]:
    """Windows of at most seq_len + 1 tokens overlapping by one, so each token after the first is predicted once."""
    return [ids[i : i + seq_len + 1] for i in range(0, max(1, len(ids) - 1), seq_len)]


def score(model, tokenizer, texts: list[str], seq_len: int, batch_size: int) -> LMScore:
    import torch

    pieces: list[list[int]] = []
    n_bytes = 0
    for text in texts:
        ids = [tokenizer.eos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces.extend(w for w in windows(ids, seq_len) if len(w) > 1)
        n_bytes += len(text.encode("utf-8"))
    pieces.sort(key=len, reverse=True)  # similar lengths share a batch: less padding
    total_loss, total_tokens = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        for start in range(0, len(pieces), batch_size):
            chunk = pieces[start : start + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, p in enumerate(chunk):
                ids[row, : len(p)] = torch.tensor(p)
                mask[row, : len(p)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            targets, valid = ids[:, 1:], mask[:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            total_loss += float(nll[valid].sum())
            total_tokens += int(valid.sum())
    mean = total_loss / max(total_tokens, 1)
    return LMScore(
        perplexity=math.exp(mean), bits_per_byte=total_loss / math.log(2) / max(n_bytes, 1),
        loss=mean, tokens=total_tokens, bytes=n_bytes,
    )
