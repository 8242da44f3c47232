"""The gateway's HTTP app (FastAPI): OpenAI-compatible ``/v1/completions``, ``/v1/chat/completions``
(whole or streamed as server-sent events) and ``/v1/models``; ``/healthz`` (the process is up), ``/readyz``
(@champion is loaded) and ``/metrics`` (Prometheus). Every answer names the registered version that gave it:
the ``x-tunegate-model-version`` header and the ``model`` field (``NAME/VERSION``).

Routing (blue-green): a request for ``NAME`` or ``NAME@champion`` goes to the version @champion points to
when it starts, ``NAME@challenger`` to @challenger's. The versions follow the registry by themselves
(tasks/serve/versions.py polls the aliases), so ``tunegate promote`` and ``rollback`` move the traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tasks.serve import openai_api as api
from tasks.serve.guardrails import GuardrailSettings, Refused, check_prompt
from tasks.serve.metrics import GatewayMetrics
from tasks.serve.versions import ServedVersions, Version

log = logging.getLogger("tunegate.gateway")
VERSION_HEADER = "x-tunegate-model-version"
STRATEGY = "blue-green"


class Unavailable(Exception):
    """No version behind the alias a request asked for (yet)."""


def create_app(served: ServedVersions, poll_seconds: float = 2.0, guardrails: GuardrailSettings | None = None,
               metrics: GatewayMetrics | None = None) -> FastAPI:
    guardrails = guardrails or GuardrailSettings()
    metrics = metrics or GatewayMetrics()
    served.listeners.append(metrics.alias_changed)
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        follower = threading.Thread(target=_start, args=(served, poll_seconds, stop), daemon=True,
                                    name="gateway-registry")
        follower.start()
        yield
        stop.set()

    app = FastAPI(title="tunegate gateway", lifespan=lifespan)
    app.state.served, app.state.metrics = served, metrics

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        metrics.errors.labels(request.url.path, "invalid_request").inc()
        return JSONResponse(api.error(f"{where}: {first.get('msg', 'invalid request')}"), status_code=400)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        champion = served.version_for("champion")
        body = {"ready": champion is not None, "model": served.model_name, "aliases": served.aliases.versions}
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
    def completions(body: api.CompletionRequest):
        def prompts(version: Version) -> list[str]:
            return body.prompts()

        return _answer(served, metrics, guardrails, "/v1/completions", body, body.prompts(), prompts, chat=False)

    @app.post("/v1/chat/completions")
    def chat(body: api.ChatRequest):
        def prompts(version: Version) -> list[str]:
            return [api.chat_prompt(version.tokenizer, body.messages)]

        return _answer(served, metrics, guardrails, "/v1/chat/completions", body, [m.text() for m in body.messages],
                       prompts, chat=True)

    return app


def _start(served: ServedVersions, poll_seconds: float, stop: threading.Event) -> None:
    """Load what the aliases point to (retrying until the registry answers), then follow them."""
    while not stop.is_set():
        try:
            served.refresh()
            break
        except Exception as exc:
            log.warning("registry not ready: %s", exc)
            stop.wait(poll_seconds)
    served.follow(poll_seconds, stop)


def _route(served: ServedVersions, requested: str) -> Version:
    name, _, alias = requested.partition("@")
    if name != served.model_name:
        raise LookupError(f"model {requested!r} is not served here; this gateway serves {served.model_name!r}")
    alias = alias or "champion"
    if alias not in ("champion", "challenger"):
        raise LookupError(f"model {requested!r}: ask for {name}, {name}@champion or {name}@challenger")
    version = served.version_for(alias)
    if version is None:
        raise Unavailable(f"{name}@{alias} points to no version (yet)")
    return version


def _answer(served, metrics, guardrails, endpoint: str, body, texts: list[str], prompts_for, chat: bool):
    settings = body.generation()
    try:
        check_prompt(texts, settings.max_new_tokens, guardrails)
        version = _route(served, body.model)
    except Refused as exc:
        metrics.guardrail_hits.labels(exc.guardrail).inc()
        metrics.errors.labels(endpoint, exc.guardrail).inc()
        return JSONResponse(api.error(str(exc), code=exc.guardrail), status_code=400)
    except LookupError as exc:
        metrics.errors.labels(endpoint, "unknown_model").inc()
        return JSONResponse(api.error(str(exc), code="model_not_found"), status_code=404)
    except Unavailable as exc:
        metrics.errors.labels(endpoint, "unavailable").inc()
        return JSONResponse(api.error(str(exc), kind="unavailable", code="no_version"), status_code=503)
    prompts = prompts_for(version)
    model = f"{served.model_name}/{version.number}"
    headers = {VERSION_HEADER: version.number}
    answer_id = api.new_id("chatcmpl" if chat else "cmpl")
    if body.stream:
        if len(prompts) != 1:
            return JSONResponse(api.error("stream: one prompt at a time"), status_code=400)
        events = _stream(served, metrics, endpoint, version, prompts[0], settings, answer_id, model, chat)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    start = time.perf_counter()
    try:
        texts, counts = served.complete(version, prompts, settings)
    except Exception as exc:
        log.exception("generation failed")
        metrics.errors.labels(endpoint, "generation").inc()
        metrics.requests.labels(version.number, endpoint, STRATEGY, "error").inc()
        return JSONResponse(api.error(f"generation failed: {type(exc).__name__}: {exc}", kind="server_error"),
                            status_code=500, headers=headers)
    metrics.latency.labels(version.number, endpoint, STRATEGY).observe(time.perf_counter() - start)
    metrics.tokens.labels(version.number).inc(sum(counts))
    metrics.requests.labels(version.number, endpoint, STRATEGY, "ok").inc()
    finish = ["length" if n >= settings.max_new_tokens else "stop" for n in counts]
    used = api.usage(sum(_tokens(version, p) for p in prompts), sum(counts))
    if chat:
        return JSONResponse(api.chat_completion(answer_id, model, texts[0], finish[0], used), headers=headers)
    return JSONResponse(api.completion(answer_id, model, texts, finish, used), headers=headers)


def _stream(served, metrics, endpoint: str, version: Version, prompt: str, settings, answer_id: str, model: str,
            chat: bool) -> Iterator[str]:
    start, first, counted = time.perf_counter(), None, []
    if chat:
        yield api.sse(api.chat_chunk(answer_id, model, {"role": "assistant", "content": ""}, None))
    try:
        for piece in served.stream(version, prompt, settings, counted):
            if first is None:
                first = time.perf_counter() - start
                metrics.first_token.labels(version.number, STRATEGY).observe(first)
            yield api.sse(api.chat_chunk(answer_id, model, {"content": piece}, None) if chat
                          else api.completion_chunk(answer_id, model, piece, None))
    except Exception as exc:
        log.exception("streamed generation failed")
        metrics.errors.labels(endpoint, "generation").inc()
        metrics.requests.labels(version.number, endpoint, STRATEGY, "error").inc()
        yield api.sse(api.error(f"generation failed: {type(exc).__name__}: {exc}", kind="server_error"))
        return
    n = counted[0] if counted else 0
    finish = "length" if n >= settings.max_new_tokens else "stop"
    yield api.sse(api.chat_chunk(answer_id, model, {}, finish) if chat
                  else api.completion_chunk(answer_id, model, "", finish))
    yield api.sse("[DONE]")
    metrics.latency.labels(version.number, endpoint, STRATEGY).observe(time.perf_counter() - start)
    metrics.tokens.labels(version.number).inc(n)
    metrics.requests.labels(version.number, endpoint, STRATEGY, "ok").inc()


def _tokens(version: Version, text: str) -> int:
    return len(version.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
