"""Tokenizer: the base model's own, or a byte-level BPE trained on the curated text.

Either way its content hash (sha256 of its files) is recorded as lineage.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks.core import snapshot
from tasks.core.hashing import folder_sha256

CODE_VERSION = "tokenizer-1"
EOS = "<|endoftext|>"
PAD = "<|pad|>"


class TokenizerSettings(BaseModel):
    """The byte-level BPE trained when there is no base model."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(4096, ge=300, le=262_144)
    min_frequency: int = Field(2, ge=1)


class TokenizerRef(BaseModel):
    path: str
    content_hash: str
    vocab_size: int
    trained: bool


TOKENIZER_FILES = {"tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json"}


def content_hash(folder: Path) -> str:
    """The tokenizer's content hash (lineage and cache key): its vocabulary and configuration files."""
    return folder_sha256(folder, keep=lambda f: f.name in TOKENIZER_FILES)


def _texts(ref: snapshot.SnapshotRef) -> Iterator[str]:
    for table in snapshot.iter_tables(ref):
        yield from table.column("text").to_pylist()


def bpe_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 0,
                  specials: tuple[str, ...] = (EOS, PAD), bos: str | None = EOS, eos: str = EOS, pad: str | None = PAD):
    """A byte-level BPE trained on ``texts`` (every byte in its alphabet, so nothing is unknown), as a
    transformers fast tokenizer; ``specials`` come first in its vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=None, pad_token=pad)


def train_bpe(ref: snapshot.SnapshotRef, settings: TokenizerSettings, out: Path) -> None:
    """Train a byte-level BPE on the snapshot's text and save it as a transformers tokenizer."""
    fast = bpe_tokenizer(_texts(ref), settings.vocab_size, settings.min_frequency)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))


def prepare(ref: snapshot.SnapshotRef, settings: TokenizerSettings, base_model: str | None, store: Path,
            models_store: Path | None = None) -> TokenizerRef:
    """The tokenizer for this run: the base model's own (its files copied into ``store``), or one trained (and
    cached by snapshot and settings).

    ``base_model`` is resolved exactly as the base-model stage resolves it (tasks.train.model.resolve_base): a
    GGUF file is dequantized there, once, into ``models_store`` (default: ``models/`` beside ``store``).
    """
    from transformers import AutoTokenizer

    if base_model:
        from tasks.train.model import resolve_base

        folder = resolve_base(base_model, Path(models_store) if models_store else Path(store).parent / "models").folder
        tok = AutoTokenizer.from_pretrained(str(folder))
        # the tokenizer files alone, in their own folder: what the registry stores beside the adapter (not a
        # second copy of the base weights) and what the evaluation cache hashes
        digest = content_hash(folder)
        out = Path(store) / f"base-{digest[:24]}"
        if not (out / "tokenizer_config.json").is_file():
            snapshot.publish(out, lambda tmp: tok.save_pretrained(str(tmp)))
        return TokenizerRef(path=str(out), content_hash=content_hash(out), vocab_size=len(tok), trained=False)
    key = snapshot.cache_key("tokenizer", ref.fingerprint, settings.model_dump(), CODE_VERSION)
    out = Path(store) / key
    if not (out / "tokenizer.json").is_file():  # trained once; two runs racing keep the first copy
        snapshot.publish(out, lambda tmp: train_bpe(ref, settings, tmp))
    tok = AutoTokenizer.from_pretrained(str(out))
    return TokenizerRef(path=str(out), content_hash=content_hash(out), vocab_size=len(tok), trained=True)


@task(name="tokenizer", cache_policy=NO_CACHE)
def tokenizer_task(ref: snapshot.SnapshotRef, settings: TokenizerSettings, base_model: str | None, store: str,
                   models_store: str | None = None) -> TokenizerRef:
    return prepare(ref, settings, base_model, Path(store), Path(models_store) if models_store else None)
