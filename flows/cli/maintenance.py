"""``tunegate gc``: drop what the state folder no longer needs (tasks/registry/state_gc.py says what that is)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, config_or_fail, default_config, fail
from tasks.core.state import IN_USE_LOCK, StatePaths


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would go; change nothing")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (its retention section)")] = None,
    wait: Annotated[float, typer.Option(min=0, help="seconds to wait for running runs to end")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="list every item")] = False,
) -> None:
    """Drop old runs' checkpoints and training blocks, registered versions beyond retention (with their weights),
    snapshots no kept run or version names, dead writers' temporary folders and old cache entries (config:
    retention). Never while a run is working."""
    from tasks.registry import state_gc
    from tasks.registry.store import RegistryUnreachable

    cfg = config_or_fail(config) if config else default_config()
    state = StatePaths.from_env()
    uri = cfg.registry.tracking_uri or state.mlflow_uri()
    try:
        with state.lock(IN_USE_LOCK, timeout_s=wait, poll_s=0.5), state.lock("registry", timeout_s=max(wait, 60)):
            plan = state_gc.plan(state, cfg.retention, uri)
            if not dry_run:
                state_gc.apply(plan, uri)
    except TimeoutError:
        fail(f"runs are working in {state.home} (they hold {state.locks / (IN_USE_LOCK + '.lock')}): nothing was "
             "removed; try again when they end, or pass --wait SECONDS")
    except RegistryUnreachable as exc:
        fail(f"{exc}: which snapshots the registered versions name cannot be known, so nothing was removed")
    totals = plan.totals()
    verb = "would remove" if dry_run else "removed"
    if not totals and not plan.versions:
        typer.echo(f"nothing to remove in {state.home} ({len(plan.kept_snapshots)} snapshots kept)")
        return
    for drop in plan.versions:
        typer.echo(f"{'would delete' if dry_run else 'deleted'} {drop.model} v{drop.version} and its model's artifacts "
                   f"({_size(drop.bytes)}; {drop.why}); its MLflow run stays")
    for kind, (n, size) in sorted(totals.items()):
        typer.echo(f"{verb} {kind:<14} {n:>5}  {_size(size):>10}")
        if verbose:
            for item in (i for i in plan.drop if i.kind == kind):
                typer.echo(f"    {item.path}  ({_size(item.bytes)}; {item.why})")
    total = sum(size for _, size in totals.values()) + sum(drop.bytes for drop in plan.versions)
    typer.echo(f"{verb} {_size(total)} in all; kept {len(plan.kept_snapshots)} snapshots")
    for model, number in plan.collected:
        typer.echo(f"{model} v{number}: its training snapshot " + ("would be" if dry_run else "was") +
                   f" removed (tag {state_gc.COLLECTED_TAG})")
