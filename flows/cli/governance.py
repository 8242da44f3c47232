"""Governance commands: ``lineage`` (which data, code and checks made a version), ``history`` (which version held
an alias when, moved by whom and why), ``reproduce`` (train a version again and compare the bits) and ``forget`` (a
deletion request, followed through everything made from a raw file)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, config_or_fail, fail
from flows.cli.models import registry_target
from tasks.core.state import IN_USE_LOCK, StatePaths


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``2026-12-03T09:30``, ``2026-12-03 09:30:00+01:00``, ``...Z``); without a zone: UTC."""
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time (e.g. 2026-12-03T09:30 or 2026-12-03T09:30Z)")
    return at.astimezone(timezone.utc) if at.tzinfo else at.replace(tzinfo=timezone.utc)


@app.command()
def history(
    name: Annotated[Optional[str], typer.Option("--name", help="registered model name")] = None,
    at: Annotated[Optional[str], typer.Option("--at", help="a time (ISO 8601, UTC unless it says): where each "
                                                          "alias pointed then, and why")] = None,
    alias: Annotated[Optional[str], typer.Option("--alias", help="only this alias (champion, challenger)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the events as JSON lines")] = False,
) -> None:
    """Every alias move (run, promote, rollback, canary controller): version, previous holder, who, via what, why,
    when. With --at TIME: which version each alias pointed to at that time, and the move that put it there."""
    from mlflow.exceptions import MlflowException

    from tasks.registry import alias_log
    from tasks.registry.store import RegistryUnreachable, bounded_http, client

    when = parse_time(at) if at else None
    uri, model = registry_target(name)
    try:
        with bounded_http():
            events = alias_log.events(client(uri), model)
    except RegistryUnreachable as exc:
        fail(str(exc))
    except MlflowException as exc:
        fail(f"no alias history for {model}: {exc.message}")
    events = [e for e in events if alias is None or e.alias == alias]
    if when is None:
        for e in events:
            typer.echo(e.model_dump_json() if as_json else e.line())
        if not events and not as_json:
            typer.echo(f"no alias moves recorded for {model}")
        return
    for name_ in [alias] if alias else sorted({e.alias for e in events}) or ["champion"]:
        held = alias_log.holder_at(events, name_, when)
        if as_json:
            typer.echo(held.model_dump_json() if held else "null")
        elif held is None or held.version is None:
            typer.echo(f"@{name_} at {when:%Y-%m-%d %H:%M:%SZ}: no version (no recorded move put one there before)")
        else:
            typer.echo(f"@{name_} at {when:%Y-%m-%d %H:%M:%SZ}: {model} v{held.version}, since "
                       f"{held.at:%Y-%m-%d %H:%M:%SZ} (was v{held.previous or '-'}), moved by {held.by} via "
                       f"{held.via}: {held.reason}")


@app.command()
def lineage(
    model_ref: Annotated[str, typer.Argument(help="models:/NAME@ALIAS, NAME/VERSION, NAME@ALIAS, @ALIAS or VERSION")],
    as_json: Annotated[bool, typer.Option("--json", help="the whole lineage as JSON")] = False,
) -> None:
    """A registered version's lineage: its snapshot chain back to every raw file (path, size, sha256), each stage's
    parameters and code version, the contracts and gates with their results, the base model's and tokenizer's
    hashes, the corrections it learned from. Markdown, or JSON with --json."""
    import json

    from mlflow.exceptions import MlflowException

    from tasks.registry import version_lineage
    from tasks.registry.store import RegistryUnreachable, bounded_http, client

    uri, default_model = registry_target(None)
    try:
        model, ref = version_lineage.parse_ref(model_ref, default_model)
    except ValueError as exc:
        raise typer.BadParameter(str(exc))
    try:
        with bounded_http():
            found = version_lineage.lineage(client(uri), StatePaths.from_env(), model, ref)
    except RegistryUnreachable as exc:
        fail(str(exc))
    except MlflowException as exc:
        fail(f"no version {model_ref}: {exc.message}")
    typer.echo(json.dumps(found, indent=2, default=str) if as_json else version_lineage.to_markdown(found))


def _run_config(c, state: StatePaths, run_id: str | None, mlflow_run_id: str | None, into):
    """The config a run ran with: runs/<id>/config.yaml, else the copy logged to its MLflow run."""
    local = state.run_dir(run_id) / "config.yaml" if run_id else None
    if local and local.is_file():
        return config_or_fail(local)
    try:
        return config_or_fail(c.download_artifacts(mlflow_run_id, "report/config.yaml", str(into)))
    except Exception as exc:  # not logged: a version registered before configs were logged
        fail(f"the config of run {run_id} is neither in {local} nor on its MLflow run: {exc}")


@app.command()
def reproduce(
    model_ref: Annotated[str, typer.Argument(help="models:/NAME@ALIAS, NAME/VERSION, NAME@ALIAS, @ALIAS or VERSION")],
    keep: Annotated[bool, typer.Option("--keep", help="keep the reproduction's folder (its adapter, data, logs)")] = False,
) -> None:
    """Train a registered version again from its recorded snapshot, config and seed (training reuse off), and
    compare every tensor of the new adapter with the registered one. Exit 0 when identical bit for bit, 1 when
    they differ or the version cannot be reproduced (a snapshot gc removed, another tokenizer or base)."""
    import shutil
    import tempfile

    from mlflow.exceptions import MlflowException

    from tasks.registry import reproduce as rep
    from tasks.registry import version_lineage
    from tasks.registry.artifacts import ArtifactMismatch
    from tasks.registry.store import RegistryUnreachable, bounded_http, client

    uri, default_model = registry_target(None)
    try:
        model, ref = version_lineage.parse_ref(model_ref, default_model)
    except ValueError as exc:
        raise typer.BadParameter(str(exc))
    state = StatePaths.from_env()
    out = Path(tempfile.mkdtemp(prefix="reproduce-", dir=state.home if state.home.is_dir() else None))
    try:
        with bounded_http():
            c = client(uri)
            v = version_lineage.resolve(c, model, ref)
            config = _run_config(c, state, (v.tags or {}).get("tunegate.run_id"), v.run_id, out)
            typer.echo(f"reproducing {model} v{v.version} (run {(v.tags or {}).get('tunegate.run_id')}) in {out}")
            result = rep.reproduce(c, uri, state, model, str(v.version), config, out, echo=typer.echo)
    except (RegistryUnreachable, rep.CannotReproduce, ArtifactMismatch) as exc:
        fail(str(exc))
    except MlflowException as exc:
        fail(f"no version {model_ref}: {exc.message}")
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
    checked = "; ".join(result.checked)
    if result.identical:
        typer.echo(f"{model} v{result.version} reproduced: {result.tensors} adapter tensors identical bit for bit "
                   f"({result.steps} steps in {result.seconds} s; checked {checked})")
        return
    fail(f"{model} v{result.version} NOT reproduced: {len(result.differing)} of {result.tensors} adapter tensors differ "
         f"(largest |difference| {result.max_abs_diff:.3g}; first: {', '.join(result.differing[:3])}); checked {checked}")


@app.command()
def forget(
    source: Annotated[str, typer.Option("--source", help="the raw file: its path (or its source name in the reports)")],
    apply: Annotated[bool, typer.Option("--apply", help="remove its rows, delete derived copies, taint versions")] = False,
    delete_file: Annotated[bool, typer.Option("--delete-file", help="with --apply: delete the raw file too")] = False,
    retrain: Annotated[bool, typer.Option("--retrain", help="with --apply: then start `tunegate run` without it")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="the config --retrain runs")] = None,
) -> None:
    """A deletion request: every snapshot, frozen evaluation set, run and registered version a raw file reached.
    Without --apply nothing changes. With --apply its documents' rows leave the snapshots and evaluation sets, the
    affected runs' training blocks and the evaluation cache are deleted, and the versions trained on it are tagged
    `tainted` (promote refuses them); --retrain then trains a new version without it."""
    import subprocess
    import sys

    from tasks.registry import forget as forgetting
    from tasks.registry.store import RegistryUnreachable, bounded_http, client

    if (delete_file or retrain) and not apply:
        raise typer.BadParameter("--delete-file and --retrain need --apply")
    state = StatePaths.from_env()
    uri, _ = registry_target(None)
    try:  # no run works while snapshots are rewritten (runs hold in-use shared), no alias moves meanwhile
        with state.lock(IN_USE_LOCK, timeout_s=120), state.lock("registry", timeout_s=120), bounded_http():
            c = client(uri)
            found = forgetting.plan(state, source, c)
            if not found.found:
                fail(f"{source}: no ingest snapshot in {state.home} lists this file (by path, name or sha256)")
            done = forgetting.apply(state, found, c) if apply else None
    except TimeoutError as exc:
        fail(f"runs are working in {state.home}: nothing was changed; try again when they end ({exc})")
    except RegistryUnreachable as exc:
        fail(str(exc))
    names = ", ".join(sorted({f["source"] for f in found.files}))
    typer.echo(f"{names}: {len(found.doc_ids)} documents, in {len(found.snapshots)} snapshots, {len(found.runs)} runs")
    for model, version, aliases in found.versions:
        held = f" (@{', @'.join(aliases)})" if aliases else ""
        typer.echo(f"  {model} v{version}{held} was trained on it" + (": tagged tainted" if apply else ""))
        if "champion" in aliases:
            typer.echo(f"  {model} v{version} is @champion: retrain without the file (--retrain) or roll back")
    if not apply:
        typer.echo("nothing changed; --apply removes its rows and taints those versions")
        return
    typer.echo("removed: " + ", ".join(f"{v} {k}" for k, v in done.items()))
    raw = [Path(f["path"]) for f in found.files if f.get("path") and Path(f["path"]).exists()]
    if delete_file:
        for path in raw:
            path.unlink()
            typer.echo(f"deleted {path}")
        raw = []
    if retrain:
        if raw:
            fail(f"{', '.join(map(str, raw))} still exists: the retrain would read it again; delete it (--delete-file) "
                 "or move it out of the data paths first")
        code = subprocess.call([sys.argv[0], "run", *(["--config", str(config)] if config else [])])
        raise typer.Exit(code)
