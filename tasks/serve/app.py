"""The gateway's HTTP app (FastAPI): OpenAI-compatible ``/v1/completions``, ``/v1/chat/completions`` (whole or
streamed as server-sent events) and ``/v1/models``; ``POST /v1/feedback`` (a rating or a corrected answer for a
response id); ``/healthz`` (the process is up), ``/readyz`` (@champion is loaded) and ``/metrics`` (Prometheus).
Every answer names the registered version that gave it: the ``x-tunegate-model-version`` header and the
``model`` field (``NAME/VERSION``).

Which version answers is tasks/serve/gateway.py's ``route`` (the rollout file: blue-green, canary, shadow);
answers pass the PII scrubber before they leave, and each request and answer goes to the traffic store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tasks.serve import openai_api as api
from tasks.serve.gateway import Gateway, Route, Unavailable
from tasks.serve.guardrails import Refused, check_prompt
from tasks.serve.shadow import ShadowJob
from tasks.serve.traffic import hashed_key
from tasks.serve.versions import Version

log = logging.getLogger("tunegate.gateway")
VERSION_HEADER = "x-tunegate-model-version"


def create_app(gw: Gateway, poll_seconds: float = 2.0) -> FastAPI:
    metrics, served = gw.metrics, gw.served
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        follower = threading.Thread(target=gw.start, args=(poll_seconds, stop), daemon=True, name="gateway-registry")
        follower.start()
        yield
        stop.set()
        gw.wake.set()
        gw.traffic.drain(timeout=5)

    app = FastAPI(title="tunegate gateway", lifespan=lifespan)
    app.state.gateway = gw

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        metrics.errors.labels(request.url.path, "invalid_request").inc()
        message = first.get("msg", "invalid request").removeprefix("Value error, ")
        return JSONResponse(api.error(f"{where}: {message}" if where else message), status_code=400)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        champion = served.version_for("champion")
        rollout = gw.rollout.settings
        body = {"ready": champion is not None, "model": served.model_name, "aliases": served.aliases.versions,
                "rollout": {"strategy": rollout.strategy, "version": rollout.version, "digest": gw.rollout.digest,
                            "canary_share": gw.canary.share(), "canary": _canary(gw)}}
        return JSONResponse(body, status_code=200 if champion else 503)

    @app.get("/metrics")
    def prometheus() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        created = int(served.aliases.checked_at)
        data = [{"id": served.model_name if alias == "champion" else f"{served.model_name}@{alias}",
                 "object": "model", "created": created, "owned_by": "tunegate", "version": number}
                for alias, number in served.aliases.versions.items()]
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    def completions(body: api.CompletionRequest, request: Request):
        asked = body.prompts()
        return _answer(gw, request, "/v1/completions", body, asked, lambda version: asked, asked, chat=False)

    @app.post("/v1/chat/completions")
    def chat(body: api.ChatRequest, request: Request):
        def prompts(version: Version) -> list[str]:
            return [api.chat_prompt(version.tokenizer, body.messages)]

        asked = [m.text() for m in body.messages]
        users = [m.text() for m in body.messages if m.role == "user"]
        return _answer(gw, request, "/v1/chat/completions", body, asked, prompts, [users[-1] if users else asked[-1]],
                       chat=True)

    @app.post("/v1/feedback")
    def feedback(body: api.FeedbackRequest):
        if not gw.traffic.settings.enabled:
            return JSONResponse(api.error("this gateway keeps no traffic store (traffic.enabled is false)",
                                          code="feedback_disabled"), status_code=409)
        if not gw.traffic.knows(body.id):
            return JSONResponse(api.error(f"no answer with id {body.id!r} in the traffic store",
                                          code="response_not_found"), status_code=404)
        feedback_id = api.new_id("fb")
        gw.traffic.add({"kind": "feedback", "id": feedback_id, "time": time.time(), "response_id": body.id,
                        "index": body.index, "rating": body.rating, "correction": body.correction},
                       scrub_fields=("correction",))
        return {"id": feedback_id, "object": "feedback", "response_id": body.id, "accepted": True}

    return app


def _canary(gw: Gateway) -> dict[str, Any] | None:
    s = gw.canary.state
    if s is None:
        return None
    return {"version": s.version, "step": s.step, "rolled_back": s.rolled_back, "promoted": s.promoted}


def _refusal(gw: Gateway, endpoint: str, exc: Exception) -> JSONResponse:
    errors = gw.metrics.errors
    if isinstance(exc, Refused):
        gw.metrics.guardrail_hits.labels(exc.guardrail).inc()
        errors.labels(endpoint, exc.guardrail).inc()
        return JSONResponse(api.error(str(exc), code=exc.guardrail), status_code=400)
    if isinstance(exc, LookupError):
        errors.labels(endpoint, "unknown_model").inc()
        return JSONResponse(api.error(str(exc), code="model_not_found"), status_code=404)
    errors.labels(endpoint, "unavailable").inc()
    return JSONResponse(api.error(str(exc), kind="unavailable", code="no_version"), status_code=503)


def _answer(gw: Gateway, request: Request, endpoint: str, body, texts: list[str], prompts_for, asked: list[str],
            chat: bool):
    """``texts``: what the input guardrails check; ``prompts_for(version)``: the model's prompts; ``asked``: what
    the traffic store keeps as each prompt (a chat's last user message)."""
    settings = body.generation()
    key = request.headers.get(gw.rollout.settings.key_header) or body.user
    try:
        check_prompt(texts, settings.max_new_tokens, gw.guardrails)
        route = gw.route(body.model, key)
    except (Refused, LookupError, Unavailable) as exc:
        return _refusal(gw, endpoint, exc)
    version = route.version
    prompts = prompts_for(version)
    model = f"{gw.served.model_name}/{version.number}"
    headers = {VERSION_HEADER: version.number}
    answer_id = api.new_id("chatcmpl" if chat else "cmpl")
    call = _Call(gw, route, endpoint, answer_id, key, asked, settings, prompts_for)
    if body.stream:
        if len(prompts) != 1:
            return JSONResponse(api.error("stream: one prompt at a time"), status_code=400)
        events = _stream(call, prompts[0], model, chat)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    start = time.perf_counter()
    try:
        gw.faults.inject(version.number)
        raw, counts = gw.served.complete(version, prompts, settings)
        answers, found = gw.scrubber.scrub(raw)
    except Exception as exc:
        log.exception("generation failed")
        call.failed(time.perf_counter() - start)
        return JSONResponse(api.error(f"generation failed: {type(exc).__name__}: {exc}", kind="server_error"),
                            status_code=500, headers=headers)
    call.done(answers, counts, sum(found, Counter()), time.perf_counter() - start)
    finish = ["length" if n >= settings.max_new_tokens else "stop" for n in counts]
    used = api.usage(sum(_tokens(version, p) for p in prompts), sum(counts))
    if chat:
        return JSONResponse(api.chat_completion(answer_id, model, answers[0], finish[0], used), headers=headers)
    return JSONResponse(api.completion(answer_id, model, answers, finish, used), headers=headers)


class _Call:
    """One request's bookkeeping once it has a version: metrics, the canary's windows, the traffic store and the
    shadow copy."""

    def __init__(self, gw: Gateway, route: Route, endpoint: str, answer_id: str, key: str | None,
                 asked: list[str], settings, prompts_for) -> None:
        self.gw, self.route, self.endpoint, self.answer_id, self.key = gw, route, endpoint, answer_id, key
        self.asked, self.settings, self.prompts_for = asked, settings, prompts_for

    def failed(self, seconds: float) -> None:
        m, r = self.gw.metrics, self.route
        m.errors.labels(self.endpoint, "generation").inc()
        m.requests.labels(r.version.number, self.endpoint, r.strategy, "error").inc()
        self.gw.record(r, False, seconds, False)

    def done(self, answers: list[str], counts: list[int], pii: Counter, seconds: float) -> None:
        gw, r, number = self.gw, self.route, self.route.version.number
        m = gw.metrics
        m.latency.labels(number, self.endpoint, r.strategy).observe(seconds)
        m.tokens.labels(number, r.strategy).inc(sum(counts))
        m.requests.labels(number, self.endpoint, r.strategy, "ok").inc()
        if pii:
            m.guardrail_hits.labels("pii_output").inc()
            for entity, n in pii.items():
                m.pii_scrubbed.labels(number, entity).inc(n)
        gw.record(r, True, seconds, bool(pii))
        now = time.time()
        for i, (prompt, answer, n) in enumerate(zip(self.asked, answers, counts)):
            gw.traffic.add({"kind": "request", "id": self.answer_id, "index": i, "time": now, "version": number,
                            "strategy": r.strategy, "endpoint": self.endpoint, "key": hashed_key(self.key),
                            "prompt": prompt, "answer": answer, "tokens": n, "seconds": round(seconds, 4)},
                           scrub_fields=("prompt",))
        if r.shadow:
            gw.shadow.submit(ShadowJob(self.answer_id, number, answers, self.prompts_for, self.settings))


def _stream(call: _Call, prompt: str, model: str, chat: bool) -> Iterator[str]:
    gw, version, settings = call.gw, call.route.version, call.settings
    start, first, counted, parts = time.perf_counter(), None, [], []
    scrub = gw.scrubber.stream()

    def chunk(text: str, finish: str | None) -> str:
        return api.sse(api.chat_chunk(call.answer_id, model, {"content": text} if text or not finish else {}, finish)
                       if chat else api.completion_chunk(call.answer_id, model, text, finish))

    if chat:
        yield api.sse(api.chat_chunk(call.answer_id, model, {"role": "assistant", "content": ""}, None))
    try:
        gw.faults.inject(version.number)
        pieces = (scrub.feed(p) for p in gw.served.stream(version, prompt, settings, counted))
        for text in _then(pieces, scrub.finish):
            if not text:
                continue
            if first is None:
                first = time.perf_counter() - start
                gw.metrics.first_token.labels(version.number, call.route.strategy).observe(first)
            parts.append(text)
            yield chunk(text, None)
    except Exception as exc:
        log.exception("streamed generation failed")
        call.failed(time.perf_counter() - start)
        yield api.sse(api.error(f"generation failed: {type(exc).__name__}: {exc}", kind="server_error"))
        return
    n = counted[0] if counted else 0
    yield chunk("", "length" if n >= settings.max_new_tokens else "stop")
    yield api.sse("[DONE]")
    call.done(["".join(parts)], [n], scrub.found, time.perf_counter() - start)


def _then(pieces: Iterator[str], last) -> Iterator[str]:
    """The pieces, then ``last()`` (what a stream scrubber still holds when the model is done)."""
    yield from pieces
    yield last()


def _tokens(version: Version, text: str) -> int:
    return len(version.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
