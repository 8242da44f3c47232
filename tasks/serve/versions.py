"""The versions a gateway serves, following the registry's aliases.

``refresh()`` asks MLflow where @champion and @challenger point; a version not loaded yet is downloaded
(its base, adapter and tokenizer folders) and its LoRA adapter attached to the one base in memory
(tasks/evaluate/model_pool.py: bases told apart by fingerprint; a version without a LoRA adapter is loaded on
its own). Only then is the new alias map published, in one assignment: a request reads the map once, when it
starts, and finishes on the version it read, which stays loaded. So an alias move (promote, rollback, a
retrain's promotion) swaps what answers without a failed or dropped request.

Generation runs one request at a time per gateway process (``lock``): the adapters share one model, and on
CPU one forward pass already uses every core.
"""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from transformers import TextIteratorStreamer

from tasks.evaluate.generation import GenerationSettings, decode_options, encode_prompts, generate_counted, prompt_room
from tasks.evaluate.model_pool import ModelPool, is_lora, load_model

log = logging.getLogger("tunegate.gateway")
ALIASES = ("champion", "challenger")


@dataclass
class Version:
    """One registered version, ready to answer."""

    number: str
    base: str
    adapter: str | None
    tokenizer: Any
    fingerprint: str | None = None
    tokenizer_dir: str | None = None
    model: Any = None  # a model loaded on its own (not a LoRA adapter on the shared base)
    load_seconds: float = 0.0

    @property
    def adapter_name(self) -> str:
        return f"v{self.number}"


@dataclass
class AliasMap:
    """Where each alias pointed at the last refresh (version numbers), and when that was."""

    versions: dict[str, str] = field(default_factory=dict)
    checked_at: float = 0.0


class ServedVersions:
    engine_name = "transformers, one generation at a time"

    def __init__(self, tracking_uri: str, model_name: str, cache: Path) -> None:
        self.tracking_uri, self.model_name, self.cache = tracking_uri, model_name, Path(cache)
        self.pool = ModelPool()
        self.lock = threading.Lock()  # one generation (or adapter attachment) at a time
        self.loaded: dict[str, Version] = {}
        self.aliases = AliasMap()
        # called with (alias, old version, new version, moved) for each alias that changed at a refresh; moved is
        # False at the first refresh (what the aliases pointed to when the gateway started)
        self.listeners: list = []

    # ---------------------------------------------------------------------------------- the registry

    def resolve(self) -> tuple[dict[str, str], str | None]:
        """Where @champion and @challenger point now (an alias that points nowhere is left out), and the
        previous champion (what a rollback would bring back), kept loaded so a rollback answers at once."""
        from mlflow.exceptions import MlflowException

        from tasks.registry.store import bounded_http, client
        from tasks.registry.versions import champion_history

        c = client(self.tracking_uri)
        found = {}
        with bounded_http():
            for alias in ALIASES:
                try:
                    found[alias] = str(c.get_model_version_by_alias(self.model_name, alias).version)
                except MlflowException:
                    continue
            history = [v for v in champion_history(c, self.model_name) if v != found.get("champion")]
        return found, (history[-1] if history else None)

    def refresh(self) -> dict[str, str]:
        """Follow the aliases: load what they point to that is not loaded yet, then publish the new map; the
        previous champion is loaded after that, off the answer path of an alias move."""
        found, previous = self.resolve()
        for number in dict.fromkeys(found.values()):
            if number not in self.loaded:
                self.loaded[number] = self._load(number)
        old, moved = self.aliases.versions, self.aliases.checked_at > 0
        self.aliases = AliasMap(versions=found, checked_at=time.time())
        for alias in ALIASES:
            if old.get(alias) != found.get(alias):
                if moved:
                    log.info("@%s: v%s -> v%s", alias, old.get(alias, "-"), found.get(alias, "-"))
                for listener in self.listeners:
                    listener(alias, old.get(alias), found.get(alias), moved)
        if previous and previous not in self.loaded:
            try:
                self.loaded[previous] = self._load(previous)
            except Exception as exc:  # a deleted or unreadable old version: rollback would load it then
                log.warning("could not preload the previous champion v%s: %s", previous, exc)
        return found

    def _load(self, number: str) -> Version:
        start = time.perf_counter()
        version = self._fetch(number)
        self._attach(version)
        version.load_seconds = round(time.perf_counter() - start, 3)
        log.info("loaded %s v%s in %.2f s", self.model_name, number, version.load_seconds)
        return version

    def _fetch(self, number: str) -> Version:
        """Download the version's base, adapter and tokenizer folders from the registry."""
        from transformers import AutoTokenizer

        from tasks.registry.artifacts import model_artifacts

        arts = model_artifacts(self.tracking_uri, self.model_name, number, self.cache / number)
        if arts is None:
            raise LookupError(f"{self.model_name} v{number} is not in the registry")
        return Version(number=number, base=arts["base"], adapter=arts.get("adapter"),
                       fingerprint=arts.get("base_fingerprint"), tokenizer_dir=arts["tokenizer"],
                       tokenizer=AutoTokenizer.from_pretrained(arts["tokenizer"]))

    def _attach(self, version: Version) -> None:
        """Put the version's LoRA adapter on the shared base (or load a full model on its own)."""
        with self.lock:  # attaching an adapter changes the model a running generation uses
            if version.adapter and not is_lora(version.adapter):
                version.model = load_model(version.base, version.adapter)
            else:
                with self.pool.use(version.adapter_name, version.base, version.adapter, version.fingerprint):
                    pass

    # ----------------------------------------------------------------------------------- generation

    def version_for(self, alias: str) -> Version | None:
        number = self.aliases.versions.get(alias)
        return self.loaded.get(number) if number else None

    def _model(self, version: Version):
        if version.model is not None:
            return nullcontext(version.model)
        return self.pool.use(version.adapter_name, version.base, version.adapter, version.fingerprint)

    def complete(self, version: Version, prompts: list[str], settings: GenerationSettings) -> tuple[list[str], list[int]]:
        """Each prompt's continuation and the number of tokens generated for it."""
        with self.lock, self._model(version) as model:
            return generate_counted(model, version.tokenizer, prompts, settings)

    def stream(self, version: Version, prompt: str, settings: GenerationSettings, counted: list[int]) -> Iterator[str]:
        """The continuation of ``prompt`` piece by piece, as the model produces it; the number of tokens
        generated is appended to ``counted`` at the end."""
        import torch

        tok = version.tokenizer
        streamer = _CountingStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self.lock, self._model(version) as model, torch.no_grad(), torch.random.fork_rng(devices=[]):
                    ids = torch.tensor(encode_prompts(tok, [prompt], prompt_room(model, settings)), dtype=torch.long)
                    torch.manual_seed(settings.seed)
                    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                   **decode_options(tok, settings))
            except BaseException as exc:  # the reader gets it instead of waiting for text that never comes
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="gateway-stream", daemon=True)
        worker.start()
        for piece in streamer:
            if piece:
                yield piece
        worker.join()
        if failure:
            raise failure[0]
        counted.append(streamer.generated)


class _CountingStreamer(TextIteratorStreamer):
    """transformers' TextIteratorStreamer that also counts the tokens generated (the prompt left out)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.generated = 0

    def put(self, value) -> None:
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.generated += int(value.numel())
        super().put(value)

