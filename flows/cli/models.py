"""The registry commands: ``models``, ``promote``, ``rollback``, and ``generate`` and ``merge`` on a
registered version."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, default_config, fail
from tasks.evaluate.generation import SERVING_DEFAULTS
from tasks.core.state import StatePaths


def registry_target(name: Optional[str]) -> tuple[str, str]:
    """(tracking URI, registered model name): the default config's, or ``name``."""
    state = StatePaths.from_env()
    cfg = default_config()
    uri = cfg.registry.tracking_uri or state.mlflow_uri()
    return uri, name or cfg.registry.model_name


@app.command()
def models(name: Annotated[Optional[str], typer.Option("--name", help="registered model; default: all")] = None) -> None:
    """Registered versions with their aliases, status, key metrics and what their run cost."""
    from mlflow.exceptions import MlflowException
    from rich.console import Console

    from tasks.registry.store import RegistryUnreachable
    from tasks.registry.versions import list_versions

    uri, _ = registry_target(None)
    try:
        versions = list_versions(uri, name)
    except RegistryUnreachable as exc:
        fail(str(exc))
    except MlflowException as exc:
        fail(exc.message)
    if not versions:
        typer.echo("no registered models yet")
        return
    console = Console()  # the terminal's width; 80 columns when there is no terminal
    for renderable in model_tables(versions):
        console.print(renderable)


def model_tables(versions) -> list:
    """One table per registered model (version, aliases, status and cost, key metrics, run), narrow enough for 80
    columns; metrics measured on other held-out data than the champion's are marked as not comparable."""
    from rich.table import Table

    keys = {"rougeL": "ROUGE-L", "bits_per_byte": "bits/B", "pii_leaked": "PII"}
    out: list = []
    for model_name in dict.fromkeys(v.name for v in versions):
        mine = [v for v in versions if v.name == model_name]
        champion = next((v for v in mine if "champion" in v.aliases), None)
        currency = next((v.cost.get("currency", "") for v in mine if v.cost), "")
        table = Table("v", "aliases", f"status\ncost {currency}".rstrip(), *keys.values(), title=model_name,
                      title_justify="left")
        table.add_column("run", overflow="fold")
        other = False
        for v in mine:
            differs = bool(champion and champion.eval_data and v.eval_data != champion.eval_data)
            other |= differs
            cells = ["" if v.metrics.get(k) is None else f"{v.metrics[k]:.4g}{'*' if differs else ''}" for k in keys]
            status = v.status or ""
            if v.cost:  # under the status, so the table still fits 80 columns
                status += f"\n{v.cost['cost_estimate']:.2g}"
            table.add_row(v.version, " ".join("@" + a for a in v.aliases), status, *cells, v.run_id or "")
        out.append(table)
        if other:
            out.append("* measured on other held-out data than @champion's: not comparable with it")
    return out


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="model version to make @champion")],
    name: Annotated[Optional[str], typer.Option("--name", help="registered model name")] = None,
    force: Annotated[bool, typer.Option("--force", help="promote a version its run blocked")] = False,
    reason: Annotated[str, typer.Option("--reason", help="why, for the alias history")] = "promoted by hand",
) -> None:
    """Move @champion to VERSION by hand (the previous champion is remembered for rollback). A version its
    run blocked (a failed contract or gate) is refused unless --force."""
    from mlflow.exceptions import MlflowException

    from tasks.registry import versions
    from tasks.registry.store import RegistryUnreachable

    uri, model = registry_target(name)
    try:
        with StatePaths.from_env().lock("registry"):  # never between a run's comparison and its promotion
            before, after = versions.promote_unless_blocked(uri, model, version, force, reason=reason)
    except versions.Blocked as exc:
        fail(f"{exc}; promote it anyway with --force")
    except MlflowException as exc:
        fail(f"cannot promote {model} v{version}: {exc.message}")
    except RegistryUnreachable as exc:
        fail(str(exc))
    typer.echo(f"{model}: @champion v{before or '-'} -> v{after}")


@app.command()
def rollback(
    name: Annotated[Optional[str], typer.Option("--name", help="registered model name")] = None,
    reason: Annotated[str, typer.Option("--reason", help="why, for the alias history")] = "rolled back by hand",
) -> None:
    """Move @champion back to the previous champion."""
    from mlflow.exceptions import MlflowException

    from tasks.registry import versions
    from tasks.registry.store import RegistryUnreachable

    uri, model = registry_target(name)
    try:
        with StatePaths.from_env().lock("registry"):
            before, after = versions.rollback(uri, model, reason=reason)
    except (LookupError, RegistryUnreachable) as exc:
        fail(str(exc))
    except MlflowException as exc:
        fail(f"cannot roll back {model}: {exc.message}")
    typer.echo(f"{model}: @champion v{before or '-'} -> v{after} (rolled back)")


@contextmanager
def _downloaded(name: Optional[str], model: str, purpose: str) -> Iterator[tuple[str, dict]]:
    """A registered version's folders (base, adapter, tokenizer), downloaded to a temporary folder and checked
    against the digests recorded at registration: (model name, parts); any failure ends the command."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from tasks.registry.artifacts import ArtifactMismatch, model_artifacts
    from tasks.registry.store import RegistryUnreachable

    uri, model_name = registry_target(name)
    with tempfile.TemporaryDirectory(prefix=f"tunegate-{purpose}-") as tmp:
        try:
            parts = model_artifacts(uri, model_name, model, Path(tmp))
        except MlflowException as exc:
            fail(f"cannot load {model_name} {model}: {exc.message}")
        except (RegistryUnreachable, ArtifactMismatch) as exc:
            fail(str(exc))
        if parts is None:
            fail(f"{model_name} has no version '{model}'")
        yield model_name, parts


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="text to continue")],
    model: Annotated[str, typer.Option("--model", help="an alias (champion, challenger) or a version number")] = "champion",
    name: Annotated[Optional[str], typer.Option("--name", help="registered model name")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=1024)] = SERVING_DEFAULTS.max_new_tokens,
    temperature: Annotated[float, typer.Option(min=0.0)] = SERVING_DEFAULTS.temperature,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = SERVING_DEFAULTS.top_p,
    seed: int = SERVING_DEFAULTS.seed,
) -> None:
    """Generate with a registered model, as `mlflow.pyfunc.load_model("models:/NAME@champion")` does, from its
    folders read as files (checked against the digests recorded at registration; nothing is unpickled)."""
    from transformers import AutoTokenizer

    from tasks.evaluate.generation import GenerationSettings, generate as continue_prompts
    from tasks.registry.pyfunc import load_merged

    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    with _downloaded(name, model, "generate") as (_, parts):
        tokenizer = AutoTokenizer.from_pretrained(parts["tokenizer"])
        loaded = load_merged(parts["base"], parts.get("adapter")).eval()
        typer.echo(continue_prompts(loaded, tokenizer, [prompt], settings)[0])


@app.command()
def merge(
    out: Annotated[Path, typer.Argument(help="folder for the merged Hugging Face model")],
    model: Annotated[str, typer.Option("--model", help="an alias (champion, challenger) or a version number")] = "champion",
    name: Annotated[Optional[str], typer.Option("--name", help="registered model name")] = None,
) -> None:
    """Merge a registered model's LoRA adapter into its base: one plain transformers folder (with tokenizer)."""
    from tasks.registry.merge import MergeError, merge_adapter

    with _downloaded(name, model, "merge") as (model_name, parts):
        try:
            merge_adapter(parts["base"], parts["adapter"], out)
        except MergeError as exc:
            fail(str(exc))
    typer.echo(f"merged {model_name} v{parts['version']} (base + adapter) -> {out}")
