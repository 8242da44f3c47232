"""Canaries: planted secrets that measure how much a model memorises its training data.

After Carlini et al., "The Secret Sharer" (USENIX Security 2019). Each canary is a sentence
"<prefix> <secret>": a prefix made distinct by a random identifier ("the access code for vault 7fk2 is")
and a secret of ``secret_digits`` random digits. ``canary_documents`` repeats each canary ``repeats`` times
as documents for the TRAINING split only (tasks/train/dataset.py inserts them); the evaluation
(tasks/evaluate/canary_exposure.py) then asks, per canary and per model:

- extracted: does greedy decoding from the prefix reproduce the secret?
- rank: where the true secret's log-likelihood given the prefix (summed over the secret's tokens) falls among
  ``candidates`` random secrets of the same format; rank 1 = more likely than every candidate.
- exposure = log2(candidates + 1) - log2(rank), in bits: about 1 for a secret the model never saw (its rank is
  uniform), log2(candidates + 1) for a memorised one.

Everything is drawn from ``seed``: the same settings give the same canaries and the same candidate secrets.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

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
