"""``tunegate gateway``: serve the registered model's @champion (and @challenger) over an OpenAI-compatible
HTTP API on loopback by default, following the registry's aliases by itself (tasks/serve/)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from flows.cli.app import app, default_config, fail
from tasks.core.state import StatePaths


@app.command()
def gateway(
    host: Annotated[str, typer.Option("--host", help="address to bind (loopback unless you mean otherwise)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    name: Annotated[Optional[str], typer.Option("--name", help="registered model name (default: the config's)")] = None,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=0.1, help="how often the aliases are read")] = 2.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, max=4096, help="most tokens a request may ask for")] = 512,
) -> None:
    """Serve @champion OpenAI-style (/v1/completions, /v1/chat/completions, /v1/models, /metrics); promote and
    rollback move the traffic without a restart. Ctrl-C stops."""
    import uvicorn

    from tasks.registry.store import RegistryUnreachable, client
    from tasks.serve.app import create_app
    from tasks.serve.guardrails import GuardrailSettings
    from tasks.serve.versions import ServedVersions

    state = StatePaths.from_env()
    cfg = default_config()
    uri, model_name = cfg.registry.tracking_uri or state.mlflow_uri(), name or cfg.registry.model_name
    try:
        client(uri)  # a tracking server that does not answer fails here, naming its URI
    except RegistryUnreachable as exc:
        fail(str(exc))
    served = ServedVersions(uri, model_name, state.serving / model_name)
    typer.echo(f"gateway for {model_name} on http://{host}:{port}/v1 (registry {uri}); ready once @champion "
               "is loaded (/readyz); Ctrl-C stops")
    uvicorn.run(create_app(served, poll_seconds, GuardrailSettings(max_tokens=max_tokens)), host=host, port=port,
                log_level="warning")
