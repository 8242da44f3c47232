"""Train/eval split of the curated snapshot, and packing of the training text into fixed-length blocks.

Documents and instruction records (tasks/data/instructions.py) are split apart, each by its own fraction, on a
hash of the document id (so a record stays on its side across runs and data drops). In the training stream an
instruction record is rendered for the run's tokenizer (its chat template when it has one), exactly as the
evaluation will ask the held-out ones; documents go in as they are. With ``completion_only`` (the default) the
loss of an instruction record counts its response only: ``train_loss_mask.npy`` beside the blocks marks the
tokens that are predicted (every token of a document, the response and its end-of-turn of a record), so the
fine-tune learns to answer, not to write tickets; the prompt is context.

Canaries (tasks/train/canaries.py), when ``canaries.count > 0``, are added here, at packing time, to the TRAINING
token stream only: they are not in the curated snapshot (whose contracts therefore never see them) and never
in the held-out split. Their prefixes and secrets are written to ``canaries.json`` beside the blocks.

With ``new_data`` (a cumulative retrain: the snapshot of the run's new documents, before the champion's training
data joined them) only the new documents are split; the champion's documents all go to training, so a document
trained on once stays on the training side however the data grows, and the held-out side is the new data's own.

``keep_out`` (the dataset's frozen evaluation set, tasks/evaluate/frozen_set.py) names documents that must not be
trained on wherever the split puts them: one with the same document id or the same text (whitespace aside) leaves
the training side; on the held-out side it stays.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks.data import instructions
from tasks.core import snapshot
from tasks.train.canaries import CanarySettings, canary_documents, make_canaries, write_canaries


class SplitSettings(BaseModel):
    """How the curated documents are split into training and held-out evaluation sets."""

    model_config = ConfigDict(extra="forbid")

    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of the documents held out")
    instruction_eval_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of the instruction records held out (the task's test set)")
    min_eval_docs: int = Field(2, ge=1, description="documents (and, when there are any, instruction records) "
                               "held out at least")
    seed: int = 0


class DatasetRef(BaseModel):
    train_blocks: str  # .npy of int32 [n_blocks, seq_len + 1]
    eval_texts: str  # .jsonl of {"doc_id", "text"}
    split: str  # .json of {"train": [doc_id...], "eval": [doc_id...]}
    train_docs: int
    eval_docs: int
    train_tokens: int
    blocks: int
    canaries: str | None = None  # .json of the planted canaries (tasks.train.canaries.write_canaries); None = off
    canary_documents: int = 0  # canary texts inserted into the training stream
    loss_mask: str | None = None  # .npy of uint8 like train_blocks: 1 = the token's prediction counts; None = all
    trained_tokens: int = 0  # tokens whose prediction counts in the loss
    kept_out: int = 0  # documents of the training side left out because the frozen evaluation set holds them


def split_sets(ref: DatasetRef) -> tuple[set[str], set[str]]:
    ids = json.loads(Path(ref.split).read_text())
    return set(ids["train"]), set(ids["eval"])


def text_key(text: str) -> str:
    """A text's identity for keeping it out of training: sha256 of its words, whitespace-insensitive."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def keep_out_keys(path: str | Path | None) -> tuple[set[str], set[str]]:
    """(document ids, text keys) of a {"doc_id", "text"} JSONL: documents training must not contain."""
    if path is None:
        return set(), set()
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["doc_id"] for r in rows if r.get("doc_id")}, {text_key(r["text"]) for r in rows}


def _bucket(doc_id: str, seed: int) -> float:
    return int(hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()[:12], 16) / 16**12


def _held_out(doc_ids: list[str], fraction: float, settings: SplitSettings) -> set[str]:
    ranked = sorted(doc_ids, key=lambda d: _bucket(d, settings.seed))
    n_eval = max(settings.min_eval_docs, round(len(doc_ids) * fraction))
    return set(ranked[: min(n_eval, max(len(doc_ids) - 1, 0))])


def split_ids(doc_ids: list[str], settings: SplitSettings,
              is_instruction: list[bool] | None = None) -> tuple[list[str], list[str]]:
    """(train ids, eval ids): a document's side depends on its id alone, so it is stable across runs.
    Instruction records (``is_instruction``) are split apart with ``instruction_eval_fraction``."""
    flags = is_instruction or [False] * len(doc_ids)
    docs = [d for d, f in zip(doc_ids, flags) if not f]
    records = [d for d, f in zip(doc_ids, flags) if f]
    eval_ids = _held_out(docs, settings.eval_fraction, settings)
    if records:
        eval_ids |= _held_out(records, settings.instruction_eval_fraction, settings)
    return [d for d in doc_ids if d not in eval_ids], [d for d in doc_ids if d in eval_ids]


def pack(token_lists: list[list[int]], eos_id: int, seq_len: int, dtype=np.int32) -> np.ndarray:
    """Documents joined with EOS and cut into blocks of seq_len + 1 tokens (inputs and shifted labels)."""
    stream: list[int] = []
    for ids in token_lists:
        stream.extend(ids)
        stream.append(eos_id)
    width = seq_len + 1
    n = len(stream) // width
    if n == 0:
        raise ValueError(f"training text has {len(stream)} tokens, fewer than one block of {width}")
    return np.asarray(stream[: n * width], dtype=dtype).reshape(n, width)


def pack_masks(masks: list[list[int]], seq_len: int) -> np.ndarray:
    """The loss masks packed exactly as ``pack`` packs the tokens (the EOS after each document counts)."""
    return pack(masks, 1, seq_len, np.uint8)


def encode_for_training(tok, texts: list[str], completion_only: bool) -> tuple[list[list[int]], list[list[int]]]:
    """(token ids, loss mask) of each training text: an instruction record rendered for ``tok``, its prompt
    masked when ``completion_only``; a document as it is, every token counted."""
    ids_out, masks = [], []
    for text in texts:
        record = instructions.parse(text)
        if record is None:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            ids_out.append(ids)
            masks.append([1] * len(ids))
            continue
        prompt_ids = tok(instructions.render_prompt(tok, record), add_special_tokens=False)["input_ids"]
        ids = tok(instructions.render_example(tok, record), add_special_tokens=False)["input_ids"]
        # the prompt is masked when it tokenizes as a prefix of the whole example (it does with chat templates
        # and the plain layout; if a tokenizer merges across the boundary, every token counts)
        prompt = len(prompt_ids) if completion_only and ids[: len(prompt_ids)] == prompt_ids else 0
        ids_out.append(ids)
        masks.append([0] * prompt + [1] * (len(ids) - prompt))
    return ids_out, masks


def with_canaries(texts: list[str], canary_texts: list[str]) -> list[str]:
    """The training texts with the canary texts spread evenly through them (deterministic, order kept)."""
    if not canary_texts:
        return list(texts)
    out: list[str] = []
    n, k = len(texts), len(canary_texts)
    j = 0
    for i, text in enumerate(texts):
        while j < k and j * (n + 1) <= i * k:  # canary j goes before document ceil(j * (n+1) / k) - 1
            out.append(canary_texts[j])
            j += 1
        out.append(text)
    out.extend(canary_texts[j:])
    return out


def prepare(ref: snapshot.SnapshotRef, tokenizer_path: str, seq_len: int, settings: SplitSettings, out: Path,
            canaries: CanarySettings | None = None, completion_only: bool = True,
            keep_out: str | None = None, new_data: str | None = None) -> DatasetRef:
    """Split, tokenize and pack; written once into ``out`` (the run's data folder) and reused on resume.
    ``keep_out``: a {"doc_id", "text"} JSONL of documents left out of training (the frozen evaluation set);
    ``new_data``: a snapshot of the new documents, the only ones split (the others are trained on)."""
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "dataset.json"
    if meta_path.is_file():
        return DatasetRef(**json.loads(meta_path.read_text()))
    table = snapshot.read_table(ref)
    ids, texts = table.column("doc_id").to_pylist(), table.column("text").to_pylist()
    by_id = dict(zip(ids, texts))
    new = set(ids) if new_data is None else {d for t in snapshot.iter_tables(new_data)
                                                for d in t.column("doc_id").to_pylist()}
    splittable = [d for d in ids if d in new]
    _, eval_ids = split_ids(splittable, settings, [instructions.parse(by_id[d]) is not None for d in splittable])
    held_out = set(eval_ids)
    train_ids = [d for d in ids if d not in held_out]
    held_ids, held_texts = keep_out_keys(keep_out)
    if held_ids or held_texts:
        kept = [d for d in train_ids if d not in held_ids and text_key(by_id[d]) not in held_texts]
        kept_out, train_ids = len(train_ids) - len(kept), kept
    else:
        kept_out = 0
    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    canaries_path, canary_texts = None, []
    if canaries is not None and canaries.count > 0:
        planted = make_canaries(canaries)
        canary_texts = canary_documents(planted, canaries.repeats)
        canaries_path = str(write_canaries(out / "canaries.json", planted, canaries))
    encoded, masks = encode_for_training(tok, with_canaries([by_id[d] for d in train_ids], canary_texts),
                                         completion_only)
    blocks = pack(encoded, tok.eos_token_id, seq_len)
    np.save(out / "train_blocks.npy", blocks)
    loss_mask = None
    if any(0 in m for m in masks):
        packed = pack_masks(masks, seq_len)
        np.save(out / "train_loss_mask.npy", packed)
        loss_mask = str(out / "train_loss_mask.npy")
    (out / "split.json").write_text(json.dumps({"train": train_ids, "eval": eval_ids}))
    with open(out / "eval.jsonl", "w") as fh:
        for d in eval_ids:
            fh.write(json.dumps({"doc_id": d, "text": by_id[d]}) + "\n")
    result = DatasetRef(
        train_blocks=str(out / "train_blocks.npy"), eval_texts=str(out / "eval.jsonl"), split=str(out / "split.json"),
        train_docs=len(train_ids), eval_docs=len(eval_ids),
        train_tokens=int(sum(len(e) + 1 for e in encoded)), blocks=int(blocks.shape[0]),
        canaries=canaries_path, canary_documents=len(canary_texts), loss_mask=loss_mask,
        trained_tokens=int(sum(sum(m) + 1 for m in masks)), kept_out=kept_out,
    )
    meta_path.write_text(result.model_dump_json(indent=2))
    return result


@task(name="split-and-pack", cache_policy=NO_CACHE)
def dataset_task(ref: snapshot.SnapshotRef, tokenizer_path: str, seq_len: int, settings: SplitSettings, out: str,
                 canaries: CanarySettings | None = None, completion_only: bool = True,
                 keep_out: str | None = None, new_data: str | None = None) -> DatasetRef:
    return prepare(ref, tokenizer_path, seq_len, settings, Path(out), canaries, completion_only, keep_out, new_data)
