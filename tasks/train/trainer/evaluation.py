"""Held-out loss during training: the eval split's texts packed like the training blocks, scored every N steps.

Every process scores its share of the blocks (the same number of forward passes on each, which ZeRO-3's
parameter gathering needs) and the token-weighted mean is summed across processes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def pack_eval_texts(path: str, tokenizer_path: str, seq_len: int) -> np.ndarray:
    """Documents joined with EOS, cut into blocks of seq_len + 1 tokens; a short text gives one short block."""
    from transformers import AutoTokenizer

    from tasks.data import instructions

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    texts = [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]
    # instruction records as training renders them (the prompt and the response, in the model's chat format)
    texts = [instructions.render_example(tok, r) if (r := instructions.parse(t)) is not None else t for t in texts]
    stream: list[int] = []
    for ids in tok(texts, add_special_tokens=False)["input_ids"] if texts else []:
        stream.extend(ids)
        stream.append(tok.eos_token_id)
    width = seq_len + 1
    n = len(stream) // width
    if n == 0:
        if len(stream) < 2:
            raise ValueError(f"eval texts {path}: fewer than 2 tokens to evaluate on")
        return np.asarray([stream], dtype=np.int64)
    return np.asarray(stream[: n * width], dtype=np.int64).reshape(n, width)


def shard(n_blocks: int, micro: int, max_batches: int, rank: int, world: int) -> list[np.ndarray]:
    """This process's micro batches of block indices: as many batches on every process (an empty one pads)."""
    limit = min(n_blocks, max_batches * micro * world)
    mine = np.arange(rank, limit, world)
    n_batches = math.ceil(math.ceil(limit / world) / micro)
    return [mine[i * micro:(i + 1) * micro] for i in range(n_batches)]


def eval_loss(engine, blocks: np.ndarray, micro: int, max_batches: int, rank: int, world: int) -> float:
    """Token-weighted mean loss of the model over (a capped number of) the eval blocks."""
    import torch
    import torch.distributed as dist

    engine.eval()
    total = torch.zeros(2, dtype=torch.float64)  # loss sum, tokens
    with torch.no_grad():
        for idx in shard(blocks.shape[0], micro, max_batches, rank, world):
            padding = len(idx) == 0
            rows = blocks[idx if not padding else [0]]
            batch = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(engine.device)
            loss = engine(input_ids=batch, labels=batch).loss  # every process runs it: ZeRO-3 gathers
            if not padding:
                tokens = rows.shape[0] * (rows.shape[1] - 1)
                total += torch.tensor([loss.detach().double().cpu().item() * tokens, tokens], dtype=torch.float64)
    if world > 1:
        total = total.to(engine.device)  # NCCL reduces GPU tensors only
        dist.all_reduce(total)
        total = total.cpu()
    engine.train()
    return float(total[0] / total[1])
