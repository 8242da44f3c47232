"""The gateway's versions on vLLM (``tunegate gateway --engine vllm``, on a GPU machine): the same registry
following, routing and API as tasks/serve/versions.py, with generation by vLLM's async engine, which batches
concurrent requests (continuous batching) and serves every version's LoRA adapter on the one base at once
(multi-LoRA: ``enable_lora``, one ``LoRARequest`` per registered version).

vLLM is not a dependency of the project (its wheels pin their own CUDA torch): install it on the GPU machine,
``pip install vllm``. A version that is not a LoRA adapter on the engine's base model cannot be served here (vLLM
holds one base per engine): its load fails with the reason and the gateway keeps serving what it has.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import queue
import threading
from pathlib import Path
from typing import Iterator

from tasks.evaluate.generation import GenerationSettings
from tasks.evaluate.model_pool import is_lora
from tasks.serve.versions import ServedVersions, Version

log = logging.getLogger("tunegate.gateway")
_DONE = object()


def vllm_missing() -> str | None:
    """Why ``--engine vllm`` cannot run here, or None when it can."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed: on a GPU machine, `pip install vllm` into the project's environment"
    import torch

    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and none is visible (torch.cuda.is_available() is False)"
    return None


class VllmVersions(ServedVersions):
    engine_name = "vLLM, multi-LoRA with continuous batching"

    def __init__(self, tracking_uri: str, model_name: str, cache: Path, max_loras: int = 4,
                 max_lora_rank: int = 64, gpu_memory_utilization: float = 0.85) -> None:
        super().__init__(tracking_uri, model_name, cache)
        self.options = {"max_loras": max_loras, "max_lora_rank": max_lora_rank,
                        "gpu_memory_utilization": gpu_memory_utilization}
        self.engine = None
        self.engine_base: str | None = None  # the fingerprint (or folder) of the base the engine holds
        self.ids = itertools.count()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="gateway-vllm", daemon=True).start()

    def _attach(self, version: Version) -> None:
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        if not version.adapter or not is_lora(version.adapter):
            raise ValueError(f"{self.model_name} v{version.number} is not a LoRA adapter: vLLM serves adapters on "
                             "one base model; serve it with --engine transformers")
        rank = int(json.loads((Path(version.adapter) / "adapter_config.json").read_text()).get("r", 0))
        if rank > self.options["max_lora_rank"]:
            raise ValueError(f"v{version.number}'s LoRA rank {rank} is above the engine's max_lora_rank "
                             f"{self.options['max_lora_rank']}")
        base = version.fingerprint or version.base
        with self.lock:
            if self.engine is None:
                args = AsyncEngineArgs(model=version.base, tokenizer=version.tokenizer_dir or version.base,
                                       enable_lora=True, dtype="bfloat16", **self.options)
                self.engine, self.engine_base = AsyncLLMEngine.from_engine_args(args), base
                log.info("vLLM engine on %s (multi-LoRA: up to %d adapters at once)", version.base,
                         self.options["max_loras"])
            elif base != self.engine_base:
                raise ValueError(f"v{version.number} is an adapter on another base model than the engine's")

    def _lora(self, version: Version):
        from vllm.lora.request import LoRARequest

        return LoRARequest(version.adapter_name, int(version.number), version.adapter)

    @staticmethod
    def _sampling(settings: GenerationSettings, delta: bool = False):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(max_tokens=settings.max_new_tokens, temperature=settings.temperature,
                              top_p=settings.top_p, seed=settings.seed,
                              output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY)

    async def _one(self, version: Version, prompt: str, settings: GenerationSettings) -> tuple[str, int]:
        final = None
        async for out in self.engine.generate(prompt, self._sampling(settings), f"gw-{next(self.ids)}",
                                              lora_request=self._lora(version)):
            final = out
        done = final.outputs[0]
        return done.text, len(done.token_ids)

    def complete(self, version: Version, prompts: list[str], settings: GenerationSettings) -> tuple[list[str], list[int]]:
        """No lock: vLLM batches the requests of every thread together."""

        async def all_prompts():
            return await asyncio.gather(*(self._one(version, p, settings) for p in prompts))

        answers = asyncio.run_coroutine_threadsafe(all_prompts(), self.loop).result()
        return [text for text, _ in answers], [n for _, n in answers]

    def stream(self, version: Version, prompt: str, settings: GenerationSettings, counted: list[int]) -> Iterator[str]:
        pieces: queue.Queue = queue.Queue()

        async def produce():
            n = 0
            try:
                async for out in self.engine.generate(prompt, self._sampling(settings, delta=True),
                                                      f"gw-{next(self.ids)}", lora_request=self._lora(version)):
                    piece = out.outputs[0]
                    n += len(piece.token_ids)
                    if piece.text:
                        pieces.put(piece.text)
                counted.append(n)
            except BaseException as exc:  # the reader gets it instead of waiting for text that never comes
                pieces.put(exc)
            finally:
                pieces.put(_DONE)

        asyncio.run_coroutine_threadsafe(produce(), self.loop)
        while (item := pieces.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
