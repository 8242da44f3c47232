"""Content hashes of files and folders, the one definition: model weights, tokenizers, checkpoints, training
inputs and GGUF files are all fingerprinted here, so two stages never disagree on what "the same" means."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

_CHUNK = 1 << 20


def _feed(h, path: str | Path) -> None:
    """A file's bytes into the hash ``h``, read in 1 MiB chunks."""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    _feed(h, path)
    return h.hexdigest()


def folder_files(folder: str | Path, keep: Callable[[Path], bool] | None = None, recursive: bool = False) -> list[Path]:
    """The files of ``folder`` (and below it with ``recursive``) that ``keep`` accepts, in sorted order."""
    found = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(p for p in found if p.is_file() and (keep is None or keep(p)))


def folder_sha256(folder: str | Path, keep: Callable[[Path], bool] | None = None, recursive: bool = False) -> str:
    """Hex sha256 over each kept file's path relative to ``folder``, a NUL and its bytes, in sorted order:
    renaming, adding, removing or changing a kept file changes it; other files do not."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in folder_files(folder, keep, recursive):
        h.update(str(f.relative_to(folder)).encode() + b"\x00")
        _feed(h, f)
    return h.hexdigest()


def file_digests(folder: str | Path, keep: Callable[[Path], bool] | None = None) -> dict[str, str]:
    """Each kept file below ``folder`` (relative path) -> its sha256, for a manifest checked file by file."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): file_sha256(p) for p in folder_files(folder, keep, recursive=True)}
