"""Hugging Face hub datasets named in ``ingest.hub_datasets`` (``owner/name[:config][@revision]``).

They need a network: the revision is resolved to a commit before anything is read, and that commit
is part of the input fingerprint. Offline (``HF_HUB_OFFLINE=1``) ingest stops at once with one line
naming the dataset and the setting (``HubDatasetUnavailable``). Hub datasets are a setting and not a
``data.paths`` entry because data paths are local paths (resolved against the config's folder).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from tasks.data.ingest.quarantine import Quarantined
from tasks.data.ingest.record_readers import dataset_rows
from tasks.data.ingest.settings import HUB_PREFIX, HUB_SPEC, IngestSettings




class HubDatasetUnavailable(ConnectionError):
    """A dataset in ``ingest.hub_datasets`` cannot be reached; the message is one line naming it."""


def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "ON", "YES", "TRUE"}


def _parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    m = HUB_SPEC.match(spec.removeprefix(HUB_PREFIX))
    if not m:
        raise ValueError(f"ingest.hub_datasets: {spec!r} is not a hub dataset id (owner/name[:config][@revision])")
    return m["repo"], m["config"], m["revision"]


def resolve_hub_revision(spec: str) -> str:
    """The commit that ``spec``'s revision points at now; HubDatasetUnavailable (one line) otherwise."""
    repo, _config, revision = _parse_hub_spec(spec)
    if _hub_offline():
        raise HubDatasetUnavailable(
            f"ingest.hub_datasets: cannot load Hugging Face dataset '{spec}': offline (HF_HUB_OFFLINE=1); "
            f"run with a network, or save it with datasets' save_to_disk and list that folder in data.paths")
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(repo, revision=revision).sha
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise HubDatasetUnavailable(
            f"ingest.hub_datasets: cannot reach Hugging Face dataset '{spec}': {type(exc).__name__}: {first}"
        ) from None


def read_hub_dataset(spec: str, settings: IngestSettings, commit: str | None = None) -> Iterator[dict[str, Any]]:
    """Documents from a hub dataset at ``commit`` (resolved by the caller for the fingerprint)."""
    import datasets

    repo, config, revision = _parse_hub_spec(spec)
    commit = commit or resolve_hub_revision(spec)
    source = HUB_PREFIX + spec
    try:
        loaded = datasets.load_dataset(repo, config, revision=commit, split=settings.hub_split)
    except Exception as exc:
        raise Quarantined("unreadable dataset", f"{type(exc).__name__}: {exc}") from exc
    yield from dataset_rows(loaded, source, settings, "application/x-hf-dataset")
