"""Where the project's own files are: the checkout that holds this code (data contracts, DeepSpeed templates,
word lists). Every module that reads one of them starts here instead of counting parent folders itself."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # tasks/core/paths.py -> the checkout
DATA_CONTRACTS = PROJECT_ROOT / "data_contracts"
