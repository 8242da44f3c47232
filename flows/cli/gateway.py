"""``tunegate gateway``: serve the registered model's @champion (and @challenger) over an OpenAI-compatible
HTTP API on loopback by default, following the registry's aliases and the rollout file by itself
(tasks/serve/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, default_config, fail
from tasks.core.state import StatePaths


@app.command()
def gateway(
    host: Annotated[str, typer.Option("--host", help="address to bind (loopback unless you mean otherwise)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    name: Annotated[Optional[str], typer.Option("--name", help="registered model name (default: the config's)")] = None,
    rollout: Annotated[Optional[Path], typer.Option("--rollout", help="rollout file: blue-green, canary or shadow "
                                                    "(default: the config's serving.rollout_file)")] = None,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=0.1, help="how often the aliases and the "
                                                "rollout file are read")] = 2.0,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", min=1, max=4096, help="most tokens a request "
                                                      "may ask for (default: the config's)")] = None,
    engine: Annotated[str, typer.Option("--engine", help="auto: vLLM when it is installed and a CUDA GPU is "
                                        "visible, else transformers; vllm: multi-LoRA with continuous batching "
                                        "(GPU); transformers: one generation at a time (CPU or GPU)")] = "auto",
) -> None:
    """Serve @champion OpenAI-style (/v1/completions, /v1/chat/completions, /v1/models, /v1/feedback, /metrics);
    promote and rollback move the traffic without a restart, and the rollout file splits it (blue-green, canary,
    shadow). Ctrl-C stops."""
    import uvicorn

    from tasks.registry.store import RegistryUnreachable, client
    from tasks.serve.answer_scrub import AnswerScrubber
    from tasks.serve.app import create_app
    from tasks.serve.gateway import Gateway
    from tasks.serve.rollout import RolloutFile

    _log_to_stderr()
    state = StatePaths.from_env()
    cfg = default_config()
    serving = cfg.serving
    uri, model_name = cfg.registry.tracking_uri or state.mlflow_uri(), name or cfg.registry.model_name
    guardrails = serving.guardrails.model_copy(update={"max_tokens": max_tokens} if max_tokens else {})
    rollout_path = rollout or serving.rollout_file
    try:
        client(uri)  # a tracking server that does not answer fails here, naming its URI
        rollout_file = RolloutFile(rollout_path)
    except (RegistryUnreachable, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    served = _versions(engine, uri, model_name, state.serving / model_name)
    scrubber = AnswerScrubber(cfg.pii if serving.scrub_answers else None)
    gw = Gateway(served, rollout_file, scrubber, state.traffic / model_name, serving.traffic, guardrails)
    typer.echo(f"gateway for {model_name} on http://{host}:{port}/v1 (registry {uri}; {served.engine_name}; rollout "
               f"{rollout_file.settings.strategy} from {rollout_path}); ready once @champion is loaded (/readyz); "
               "Ctrl-C stops")
    uvicorn.run(create_app(gw, poll_seconds), host=host, port=port, log_level="warning")


def _versions(engine: str, uri: str, model_name: str, cache: Path):
    """The versions served, on the engine asked for (``auto``: vLLM where it can run)."""
    from tasks.serve.versions import ServedVersions
    from tasks.serve.vllm_versions import VllmVersions, vllm_missing

    if engine not in ("auto", "vllm", "transformers"):
        fail(f"--engine {engine!r}: choose auto, vllm or transformers")
    why = vllm_missing() if engine != "transformers" else "asked for transformers"
    if engine == "vllm" and why:
        fail(f"--engine vllm: {why}")
    return ServedVersions(uri, model_name, cache) if why else VllmVersions(uri, model_name, cache)


def _log_to_stderr() -> None:
    """The gateway's own decisions (alias moves followed, rollout changes, canary steps, rollbacks, promotions)
    as timestamped lines on stderr."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("tunegate.gateway", "tunegate.registry"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False
