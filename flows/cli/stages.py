"""One stage at a time, on files, JSONL or snapshots: ``ingest``, ``dedup`` and ``scrub``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, config_or_fail, default_config, fail
from tasks.core.state import StatePaths


def _stage_store() -> Path:
    return StatePaths.from_env().snapshots


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders to ingest")],
    out: Annotated[Path, typer.Option("--out", help="snapshot folder, or a .jsonl file")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c")] = None,
) -> None:
    """Ingest files into documents; unreadable ones are listed with the reason."""
    from tasks.core import snapshot
    from tasks.data.ingest.ingest import ingest_to_snapshot

    cfg = config_or_fail(config) if config else default_config()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    try:
        ref = ingest_to_snapshot(paths, cfg.ingest, cfg.dask, _stage_store())
    except (ConnectionError, FileNotFoundError) as exc:  # e.g. a hub dataset offline: one line naming it
        fail(str(exc))
    snapshot.export(ref, out)
    stats = ref.manifest()["stats"]
    for row in (Path(ref.path) / "quarantine.jsonl").read_text().splitlines():
        typer.echo(f"quarantined: {row}", err=True)
    typer.echo(f"{stats['documents']} documents from {stats['inputs']} inputs, {stats['quarantined']} quarantined -> {out}")


def _open(path: Path):
    from tasks.core import snapshot

    try:
        return snapshot.open_input(path, _stage_store())
    except (ValueError, OSError) as exc:
        fail(str(exc))


@app.command()
def dedup(
    inp: Annotated[Path, typer.Argument(metavar="IN", help="snapshot folder or .jsonl")],
    out: Annotated[Path, typer.Option("--out", help="snapshot folder, or a .jsonl file")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c")] = None,
) -> None:
    """Remove exact and near duplicates."""
    from tasks.core import snapshot
    from tasks.data.dedup.stage import dedup_snapshot

    cfg = config_or_fail(config) if config else default_config()
    ref = dedup_snapshot(_open(inp), cfg.dedup, _stage_store())
    snapshot.export(ref, out)
    s = ref.manifest()["stats"]
    typer.echo(f"kept {s['kept']}, removed {s['exact_duplicates']} exact and {s['near_duplicates']} near duplicates -> {out}")


@app.command()
def scrub(
    inp: Annotated[Path, typer.Argument(metavar="IN", help="snapshot folder or .jsonl")],
    out: Annotated[Path, typer.Option("--out", help="snapshot folder, or a .jsonl file")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c")] = None,
) -> None:
    """Scrub PII with Presidio."""
    from tasks.core import snapshot
    from tasks.data.pii.scrub import scrub_snapshot

    cfg = config_or_fail(config) if config else default_config()
    ref = scrub_snapshot(_open(inp), cfg.pii, cfg.dask, _stage_store())
    snapshot.export(ref, out)
    s = ref.manifest()["stats"]
    found = ", ".join(f"{k} {v}" for k, v in s["pii_entities"].items()) or "none"
    typer.echo(f"{ref.rows} documents, PII scrubbed: {found} -> {out}")
