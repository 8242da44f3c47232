"""``tunegate evalset``: a dataset's frozen evaluation set (tasks/evaluate/frozen_set.py), shown and extended on
purpose. ``add`` reads files as ``run`` does (any supported format; JSONL of documents or instruction records),
cleans and scrubs them with the config's settings (so they look like the curated data the models are trained on),
and writes a new version holding the set so far plus whatever it does not hold yet."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, config_or_fail, default_config, fail
from tasks.core.state import StatePaths

evalset_app = typer.Typer(no_args_is_help=True, help="A dataset's frozen evaluation set: list its versions, add to it.")
app.add_typer(evalset_app, name="evalset")

DatasetOption = Annotated[Optional[str], typer.Option("--dataset", help="the dataset (default: the config's "
                                                                         "data.dataset)")]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="pipeline config")]


def _dataset(dataset: Optional[str], config: Optional[Path]):
    settings = config_or_fail(config) if config is not None else default_config()
    return dataset or settings.data.dataset, settings


def read_items(paths: list[Path], settings) -> tuple[list[dict], list[str]]:
    """(curated rows, one line per input skipped or document dropped): the files read as ingest reads them,
    then normalised, length-checked and PII-scrubbed with ``settings`` (a PipelineConfig)."""
    from tasks.data.clean import clean_documents
    from tasks.data.ingest.ingest import discover, ingest_path
    from tasks.data.pii.scrub import scrub_documents

    docs, notes = [], []
    for path, source, root in discover([str(p) for p in paths], settings.ingest):
        for item in ingest_path(path, source, root, settings.ingest):
            if "quarantine" in item:
                q = item["quarantine"]
                notes.append(f"skipped {q['source']}: {q['reason']}" + (f" ({q['detail']})" if q.get("detail") else ""))
            else:
                docs.append(item)
    counts: Counter = Counter()
    cleaned = list(clean_documents(docs, settings.clean, counts))
    dropped = {k: v for k, v in counts.items() if k != "kept" and v}
    if dropped:
        notes.append("dropped by cleaning: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dropped.items()))
    found: Counter = Counter()
    scrubbed = scrub_documents(cleaned, settings.pii, found) if cleaned else []
    if found:
        notes.append("PII replaced: " + ", ".join(f"{k} {v}" for k, v in sorted(found.items())))
    return [{"doc_id": d["doc_id"], "text": d["text"]} for d in scrubbed], notes


@evalset_app.command("add")
def add(
    paths: Annotated[list[Path], typer.Argument(help="files or folders of documents or instruction records")],
    dataset: DatasetOption = None,
    config: ConfigOption = None,
) -> None:
    """Add documents or instruction records to the dataset's frozen evaluation set, as a new version (items it
    already holds are not added twice). Every later retrain of the dataset is judged on it."""
    from tasks.evaluate import frozen_set

    for p in paths:
        if not p.exists():
            fail(f"PATHS: no such file or folder: {p}")
    name, settings = _dataset(dataset, config)
    state = StatePaths.from_env()
    try:
        rows, notes = read_items(paths, settings)
        for note in notes:
            typer.echo(note)
        if not rows:
            fail(f"dataset {name}: nothing to add (no document of {', '.join(map(str, paths))} was kept)")
        before = frozen_set.current(state, name)
        after, added = frozen_set.extend(state, name, rows, "evalset add " + " ".join(str(p.resolve()) for p in paths))
    except (ValueError, OSError) as exc:
        fail(str(exc))
    if not added:
        typer.echo(f"{name}: nothing new; the evaluation set stays {after.label} ({after.size} items)")
        return
    was = f"{before.label} -> " if before else ""
    typer.echo(f"{name}: evaluation set {was}{after.label}: {added} added, {after.size} in all "
               f"({after.documents} documents, {after.instructions} instruction records)")


@evalset_app.command("list")
def list_versions(dataset: DatasetOption = None, config: ConfigOption = None) -> None:
    """The versions of the dataset's frozen evaluation set, oldest first."""
    from tasks.evaluate import frozen_set

    name, _ = _dataset(dataset, config)
    found = frozen_set.versions(StatePaths.from_env(), name)
    if not found:
        typer.echo(f"{name}: no evaluation set yet (the dataset's first retrain freezes its held-out split)")
        return
    typer.echo(f"evaluation set of dataset {name} (newest last; every retrain is judged on the newest):")
    for v in found:
        typer.echo(f"  v{v.version}  {v.content_hash[:16]}  {v.documents} documents, {v.instructions} instruction "
                   f"records (+{v.added})  {v.created}  {v.source}")
    try:
        frozen_set.read_rows(found[-1])
    except (ValueError, OSError) as exc:
        fail(str(exc))
