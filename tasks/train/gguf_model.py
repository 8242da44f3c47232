"""GGUF base models: dequantized once into an ordinary Hugging Face folder, cached by the file's sha256.

transformers reads a GGUF file (``from_pretrained(folder, gguf_file=name)``, through the ``gguf``
package) and dequantizes every tensor to fp32. That takes seconds to minutes, so it is done once: the
model is saved as safetensors beside its tokenizer under ``<models store>/gguf-<sha256 prefix>/``, and
training, evaluation and the registry see a plain folder. The same file always maps to the same folder,
whatever its name or location.
"""

from __future__ import annotations

import contextlib
import io
import json
from functools import lru_cache
from pathlib import Path

from tasks.core import snapshot
from tasks.core.hashing import file_sha256

CODE_VERSION = "gguf-1"
SOURCE_FILE = "gguf_source.json"  # provenance, written beside the converted weights


def cached_sha256(path: Path) -> str:
    """The file's sha256, computed once per path, size and modification time (GGUF files are large)."""
    stat = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:  # size and mtime key the cache
    return file_sha256(path)


def folder_for(gguf: Path, store: Path) -> Path:
    """Where the dequantized copy of ``gguf`` lives (whether or not it exists yet)."""
    return Path(store) / f"gguf-{cached_sha256(gguf)[:24]}"


@contextlib.contextmanager
def _quiet_progress():
    """transformers dequantizes and saves under tqdm bars written to stderr; keep them out of the run's logs
    (logging handlers keep their own stream, so warnings still show)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def convert(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` to fp32 and save model + tokenizer as a Hugging Face folder at ``out``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    with _quiet_progress():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # the weights are plain fp32 tensors now: drop the GGUF "quantization" so the model saves as any other
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    if tok.pad_token is None:  # packed training needs no padding; evaluation batches do (pad = eos, masked)
        tok.pad_token = tok.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.config.use_cache = True
    with _quiet_progress():
        model.save_pretrained(str(out))
        tok.save_pretrained(str(out))
    (out / SOURCE_FILE).write_text(json.dumps({
        "gguf_file": gguf.name, "gguf_sha256": cached_sha256(gguf), "code_version": CODE_VERSION,
        "transformers_version": transformers.__version__,
    }, indent=1))


def dequantized_folder(gguf: Path, store: Path) -> Path:
    """The converted folder for ``gguf`` under ``store``, converting it on first use (safe against races)."""
    out = folder_for(gguf, store)
    if (out / SOURCE_FILE).is_file():
        return out
    snapshot.publish(out, lambda tmp: convert(gguf, tmp))  # two runs racing keep the first copy
    return out
