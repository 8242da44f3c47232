"""The ``tunegate`` command (flows/cli/app.py), with its commands registered in help order: the pipeline
(run, prepare, init), one stage at a time (ingest, dedup, scrub), the registry (models, promote, rollback,
generate, merge), governance (lineage, history, reproduce), the dataset's frozen evaluation set (evalset), operations (deploy, serve,
drift, server), serving (gateway) and maintenance (gc)."""

from flows.cli import pipeline, stages, models, governance, evalsets, operations, gateway, maintenance  # noqa: I001  (importing registers; order = help order)
from flows.cli.app import app, main

__all__ = ["app", "main", "pipeline", "stages", "models", "governance", "evalsets", "operations", "gateway", "maintenance"]
