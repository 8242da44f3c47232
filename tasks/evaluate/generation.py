"""Text generation for evaluation and serving: batched, left-padded, greedy or sampled, reproducible.

``generate(model, tokenizer, prompts, settings)`` returns the continuation of each prompt (the prompt itself
left out, special tokens dropped). Every prompt starts after the EOS token, as documents do in training
(tasks/train/dataset.py joins them with EOS) and in scoring (tasks/evaluate/evaluate.py), so an empty prompt works too.

Prompts are batched by length (answers come back in the given order) and batches are left-padded, so each
row's last prompt token sits next to its first generated one; a prompt longer than the model's context (less
the tokens to generate) keeps its end. With temperature 0 decoding is
greedy; above 0 it samples with that temperature and nucleus top_p, from torch's generator seeded with
``seed`` plus the batch number inside a forked RNG state, so the same prompts and settings always give the
same texts and the caller's random state is left as it was.

PEFT prompt-learning models (prefix tuning) bring their own past key values, which ``model.generate`` drops
after the first step with peft 0.21 / transformers 5.24 (the continuation then differs from what the model's
own forward pass predicts). They are decoded here by a plain loop instead: right-padded batches, the whole
sequence run at every step, exactly as training and scoring run the model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.core import progress


class GenerationSettings(BaseModel):
    """How continuations are decoded."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(32, ge=1, le=1024, description="tokens generated per prompt at most")
    temperature: float = Field(0.0, ge=0.0, description="0 decodes greedily; above 0 samples at this temperature")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass (sampling only)")
    seed: int = Field(0, description="seed of the sampler; generations are reproducible for a given seed")


# what a registered model generates with unless a request says otherwise (the pyfunc's params, `tunegate
# generate`): longer answers than the evaluation's, greedy
SERVING_DEFAULTS = GenerationSettings(max_new_tokens=48)


def _start_id(tokenizer) -> int:
    start = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    if start is None:
        raise ValueError("the tokenizer has neither an EOS nor a BOS token to start prompts with")
    return int(start)


def context_limit(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) if config is not None else None


def prompt_learning(model) -> bool:
    """Whether ``model`` is a PEFT prompt-learning model (prefix tuning, …) that brings its own past key values."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def prompt_room(model, settings: GenerationSettings) -> int | None:
    """How many prompt tokens fit beside the tokens to generate (None: no known context limit)."""
    limit = context_limit(model)
    return max(1, limit - settings.max_new_tokens) if limit else None


def decode_options(tokenizer, settings: GenerationSettings) -> dict:
    """``model.generate``'s options for these settings: greedy at temperature 0, else nucleus sampling."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _start_id(tokenizer)
    sample = settings.temperature > 0
    return dict(max_new_tokens=settings.max_new_tokens, do_sample=sample, pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id, temperature=settings.temperature if sample else None,
                top_p=settings.top_p if sample else None, top_k=None, num_beams=1)


def encode_prompts(tokenizer, prompts: list[str], room: int | None = None) -> list[list[int]]:
    """Token ids of each prompt after the start token; with ``room``, only the last ``room`` ids."""
    start = _start_id(tokenizer)
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    out = [[start] + list(ids) for ids in encoded]
    if room is not None:
        out = [ids[-room:] for ids in out]
    return out


def generate(model, tokenizer, prompts: list[str], settings: GenerationSettings | None = None,
             batch_size: int = 8) -> list[str]:
    """The continuation of each prompt, in order."""
    return generate_counted(model, tokenizer, prompts, settings, batch_size)[0]


def generate_counted(model, tokenizer, prompts: list[str], settings: GenerationSettings | None = None,
                     batch_size: int = 8) -> tuple[list[str], list[int]]:
    """The continuation of each prompt and how many tokens were generated for it (an EOS that ended it
    included), in order."""
    import torch

    settings = settings or GenerationSettings()
    if not prompts:
        return [], []
    encoded = encode_prompts(tokenizer, prompts, prompt_room(model, settings))
    options = decode_options(tokenizer, settings)
    pad, eos = options["pad_token_id"], options["eos_token_id"]
    # prompts of similar length share a batch (less padding); answers come back in the callers' order
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    ordered = [encoded[i] for i in order]
    outputs: list[str] = []
    lengths: list[int] = []
    if prompt_learning(model):
        with torch.no_grad():
            for number, start in enumerate(range(0, len(ordered), batch_size)):
                new = _decode_stepwise(model, ordered[start : start + batch_size], settings, pad, eos, number)
                outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
                lengths.extend(_generated(row, eos) for row in new)
                progress.update(len(outputs), len(prompts))
        return _unsort(outputs, order), _unsort(lengths, order)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for number, start in enumerate(range(0, len(ordered), batch_size)):
            chunk = ordered[start : start + batch_size]
            width = max(len(ids) for ids in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, p in enumerate(chunk):
                ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
                mask[row, width - len(p):] = 1
            torch.manual_seed(settings.seed + number)
            out = model.generate(input_ids=ids, attention_mask=mask, **options)
            outputs.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
            lengths.extend(_generated(row, eos) for row in out[:, width:].tolist())
            progress.update(len(outputs), len(prompts))
    return _unsort(outputs, order), _unsort(lengths, order)


def _generated(tokens: list[int], eos: int | None) -> int:
    """Tokens generated in a row: up to and with the first EOS (what follows it is padding), else all."""
    return tokens.index(eos) + 1 if eos is not None and eos in tokens else len(tokens)


def _unsort(outputs: list, order: list[int]) -> list:
    result: list = [None] * len(outputs)
    for position, index in enumerate(order):
        result[index] = outputs[position]
    return result


def _next_tokens(logits, settings: GenerationSettings, generator):
    """Greedy argmax, or a sample at ``temperature`` from the smallest set of tokens holding ``top_p``."""
    import torch

    if settings.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= settings.top_p  # mass before the token already enough
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _decode_stepwise(model, rows: list[list[int]], settings: GenerationSettings, pad: int, eos: int | None,
                     number: int) -> list[list[int]]:
    """New token ids for each row, running the whole right-padded batch at every step (no key/value cache)."""
    import torch

    generator = torch.Generator().manual_seed(settings.seed + number)
    seqs, new = [list(r) for r in rows], [[] for _ in rows]
    active = list(range(len(rows)))
    for _ in range(settings.max_new_tokens):
        if not active:
            break
        width = max(len(seqs[i]) for i in active)
        ids = torch.full((len(active), width), pad, dtype=torch.long)
        mask = torch.zeros((len(active), width), dtype=torch.long)
        for row, i in enumerate(active):
            ids[row, : len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
            mask[row, : len(seqs[i])] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = logits[torch.arange(len(active)), mask.sum(1) - 1]
        chosen = _next_tokens(last, settings, generator).tolist()
        still = []
        for i, token in zip(active, chosen):
            seqs[i].append(token)
            new[i].append(token)
            if token != eos:
                still.append(i)
        active = still
    return new
