"""Shadow traffic: @challenger answers a copy of a request after the user has the champion's answer, on a thread
of its own; the pair's similarity is measured with the evaluation stage's metrics (ROUGE-L and chrF,
tasks/evaluate/text_metrics.py, 0-100), exported as divergence (1 - similarity) and written to the traffic store.
A full queue drops the copy (counted), never the user's request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("tunegate.gateway")


@dataclass
class ShadowJob:
    request_id: str
    champion: str  # the version that answered the user
    champion_texts: list[str]
    prompts_for: Callable[[Any], list[str]]  # the challenger's prompts (a chat template is per tokenizer)
    settings: Any  # GenerationSettings


class ShadowRunner:
    def __init__(self, served, scrubber, traffic, metrics, size: int = 64) -> None:
        self.served, self.scrubber, self.traffic, self.metrics = served, scrubber, traffic, metrics
        self.queue: queue.Queue[ShadowJob] = queue.Queue(maxsize=size)
        self.thread = threading.Thread(target=self._loop, name="gateway-shadow", daemon=True)
        self.thread.start()

    def resize(self, size: int) -> None:
        self.queue.maxsize = size

    def submit(self, job: ShadowJob) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.metrics.shadow_requests.labels("dropped").inc()

    def drain(self, timeout: float = 60.0) -> bool:
        end = time.time() + timeout
        while self.queue.unfinished_tasks and time.time() < end:
            time.sleep(0.02)
        return not self.queue.unfinished_tasks

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            try:
                self._run(job)
            except Exception as exc:
                log.warning("shadow request %s failed: %s", job.request_id, exc)
                self.metrics.shadow_requests.labels("error").inc()
            finally:
                self.queue.task_done()

    def _run(self, job: ShadowJob) -> None:
        from tasks.evaluate.text_metrics import per_example

        challenger = self.served.version_for("challenger")
        if challenger is None or challenger.number == job.champion:
            self.metrics.shadow_requests.labels("dropped").inc()
            return
        start = time.perf_counter()
        texts, _ = self.served.complete(challenger, job.prompts_for(challenger), job.settings)
        seconds = time.perf_counter() - start
        texts, _ = self.scrubber.scrub(texts)
        scores = per_example(texts, job.champion_texts)
        similarity = {m: sum(scores[m]) / len(scores[m]) for m in ("rougeL", "chrf")}
        for m, value in similarity.items():
            self.metrics.shadow_divergence.labels(m).observe(max(0.0, 1 - value / 100))
        self.metrics.shadow_requests.labels("ok").inc()
        self.traffic.add({"kind": "shadow", "id": job.request_id, "time": time.time(), "champion": job.champion,
                          "challenger": challenger.number, "champion_answer": job.champion_texts,
                          "challenger_answer": texts, "seconds": round(seconds, 4),
                          "similarity": {m: round(v, 2) for m, v in similarity.items()}})
