"""`tunegate` operations commands (deploy, serve, server), registered on the main command."""

from __future__ import annotations

from flows.cli import app  # noqa: F401
