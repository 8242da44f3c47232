"""The drift monitor: compare a new data drop with what the @champion was trained on; on drift, emit an event.

``drift_monitor(dataset, new_data)`` reads the drop the way a retrain would (ingest, then clean), finds
the reference — the current @champion's training snapshot in the state folder (its registry tag
``snapshot_fingerprint`` names it; the comparison uses that snapshot's pre-scrub parent when it is
there, so both sides are cleaned but not yet scrubbed), or, with no champion, the ``reference`` path
given — and measures document lengths, token distribution and out-of-vocabulary rate under the
champion's tokenizer (or, without a champion, a tokenizer trained on the reference, as the pipeline
would train one), PII per document and duplicates against the reference (``tasks.drift_stats``; the
thresholds are in ``data_contracts/drift.yaml``).

The result is a Markdown report, returned, written to ``$TUNEGATE_HOME/drift/<id>/report.md`` (with
``report.json``) and attached to the flow run as an artifact. On drift it emits ``tunegate.data.drift``
for the resource ``tunegate.dataset.<dataset>``, with the statistics and the new data path in the
payload; the ``retrain`` deployment's trigger (prefect.yaml) turns that event into a retrain on the new
data.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from flows.config import DEFAULT_CONFIG, PipelineConfig, load_config
from tasks import drift_stats, snapshot
from tasks.drift_stats import Comparison, DriftThresholds, Side
from tasks.state import StatePaths

ROOT = Path(__file__).resolve().parents[1]
DRIFT_EVENT = "tunegate.data.drift"
RESOURCE_PREFIX = "tunegate.dataset."
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
TEXT_CAP = 20_000  # characters of one document used for token and word statistics (lengths use all)
_WORD = re.compile(r"\w+")
STAGE_PREFERENCE = ("pii", "dedup", "clean", "ingest", "import")


# ------------------------------------------------------------------------------------------ reference


class Reference(BaseModel):
    """What the new drop is compared with."""

    kind: str  # "champion", "path" or "none"
    description: str
    texts_snapshot: str | None = None  # the snapshot whose texts are compared
    scrubbed: bool = False  # whether those texts are already PII-scrubbed
    pii_snapshot: str | None = None  # a snapshot with a pii_found column, when the texts are scrubbed
    fingerprint: str | None = None
    model: str | None = None
    version: str | None = None
    tokenizer: str | None = None
    tokenizer_source: str = ""


def find_snapshot(root: Path, fingerprint: str, stages: tuple[str, ...] = STAGE_PREFERENCE) -> snapshot.SnapshotRef | None:
    """The stored snapshot with this content fingerprint, preferring the stages in order."""
    root = Path(root)
    for stage in stages:
        for manifest in sorted((root / stage).glob(f"*/{snapshot.MANIFEST}")):
            try:
                m = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            if m.get("fingerprint") == fingerprint:
                return snapshot.SnapshotRef(path=str(manifest.parent), fingerprint=fingerprint, rows=m["rows"],
                                            stage=stage, reused=True)
    return None


def pre_scrub_parent(root: Path, ref: snapshot.SnapshotRef) -> snapshot.SnapshotRef | None:
    """The snapshot a pii-stage snapshot was scrubbed from (dedup stage), when it is still stored."""
    if ref.stage != "pii":
        return None
    parent = ref.manifest().get("parent_fingerprint")
    return find_snapshot(root, parent, ("dedup", "clean")) if parent else None


def local_tokenizer(store: Path, content_hash: str) -> str | None:
    """A tokenizer folder in the state folder whose content hash is ``content_hash``."""
    from tasks.tokenizer import content_hash as hash_of

    if not content_hash or not Path(store).is_dir():
        return None
    for folder in sorted(Path(store).iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and (folder / "tokenizer.json").is_file():
            if hash_of(folder) == content_hash:
                return str(folder)
    return None


def champion_tokenizer(tracking_uri: str, name: str, dest: Path) -> str | None:
    """Download only the champion's tokenizer folder from the registry (not its weights)."""
    import mlflow
    import yaml

    from tasks import registry

    done = dest / "tokenizer"
    if (done / "tokenizer.json").is_file() or (done / "tokenizer_config.json").is_file():
        return str(done)  # downloaded by an earlier run for this champion version
    dest.mkdir(parents=True, exist_ok=True)
    with registry.tracking(tracking_uri):
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@champion/MLmodel", dst_path=str(dest))
    artifacts = (yaml.safe_load(Path(mlmodel).read_text()).get("flavors", {}).get("python_function", {})
                 .get("artifacts", {}))
    sub = (artifacts.get("tokenizer") or {}).get("path")
    if not sub:
        return None
    shutil.rmtree(dest / ".download", ignore_errors=True)
    with registry.tracking(tracking_uri):
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@champion/{sub}",
                                                       dst_path=str(dest / ".download")))
    shutil.rmtree(done, ignore_errors=True)  # an interrupted earlier download
    got.rename(done)
    return str(done)


def champion_reference(config: PipelineConfig, state: StatePaths, work: Path) -> Reference | None:
    """The current @champion's training snapshot and tokenizer; None when there is no champion."""
    from mlflow.exceptions import MlflowException

    from tasks import registry

    uri = config.registry.tracking_uri or state.mlflow_uri()
    name = config.registry.model_name
    if not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file():
        c = registry.client(uri)
    else:
        return None  # no registry database yet: no champion
    try:
        mv = c.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    tags = mv.tags or {}
    fp = tags.get("snapshot_fingerprint")
    ref = find_snapshot(state.snapshots, fp) if fp else None
    described = f"@champion {name} v{mv.version}"
    if ref is None:
        return Reference(kind="champion", model=name, version=str(mv.version), fingerprint=fp,
                         description=f"{described}: its training snapshot {str(fp)[:16]} is not in {state.snapshots}")
    parent = pre_scrub_parent(state.snapshots, ref)
    texts = parent or ref
    tok = local_tokenizer(state.tokenizers, tags.get("tokenizer_hash", ""))
    source = "the champion's (state folder)"
    if tok is None:
        try:
            tok = champion_tokenizer(uri, name, work / f"{name}-v{mv.version}")
            source = "the champion's (registry)"
        except Exception:  # the registry copy is the fallback; without it the drop gets a reference tokenizer
            tok, source = None, ""
    return Reference(
        kind="champion", model=name, version=str(mv.version), fingerprint=fp,
        description=f"{described}, training snapshot {ref.stage}/{Path(ref.path).name} ({fp[:16]})",
        texts_snapshot=texts.path, scrubbed=parent is None and ref.stage == "pii",
        pii_snapshot=ref.path if ref.stage == "pii" else None, tokenizer=tok, tokenizer_source=source,
    )


# ------------------------------------------------------------------------------------------ measuring


class Loaded(BaseModel):
    """One side read from its snapshot: every document's length and exact key, and a sample of texts."""

    documents: int
    lengths: list[int]
    keys: list[str]
    sample: list[str]
    pii_found: list[int] | None = None  # per sampled document, from a pii_found column


def load_side(path: str, t: DriftThresholds) -> Loaded:
    """Lengths and exact keys of every document; a seeded reservoir sample of texts."""
    from tasks.dedup import exact_key

    rng = random.Random(t.seed)
    lengths: list[int] = []
    keys: list[str] = []
    sample: list[str] = []
    pii: list[int] = []
    has_pii, n = False, 0
    for table in snapshot.iter_tables(path):
        texts = table.column("text").to_pylist()
        found = table.column("pii_found").to_pylist() if "pii_found" in table.column_names else None
        has_pii = has_pii or found is not None
        for i, text in enumerate(texts):
            text = text or ""
            lengths.append(len(text))
            keys.append(exact_key(text))
            entities = sum(json.loads(found[i] or "{}").values()) if found else 0
            if len(sample) < t.sample_size:
                sample.append(text)
                pii.append(entities)
            else:
                j = rng.randrange(n + 1)
                if j < t.sample_size:
                    sample[j], pii[j] = text, entities
            n += 1
    return Loaded(documents=n, lengths=lengths, keys=keys, sample=sample, pii_found=pii if has_pii else None)


def word_counts(texts: list[str]) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        counts.update(_WORD.findall(text[:TEXT_CAP]))
    return counts


class TokenizerView:
    """What the statistics need from a tokenizer: token ids of texts, and whether a word is one token."""

    def __init__(self, folder: str) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(folder)
        self.unk = self.tok.unk_token_id
        self._known: dict[str, bool] = {}

    def token_counts(self, texts: list[str]) -> Counter:
        counts: Counter = Counter()
        for i in range(0, len(texts), 64):
            for ids in self.tok([t[:TEXT_CAP] for t in texts[i : i + 64]], add_special_tokens=False)["input_ids"]:
                counts.update(ids)
        return counts

    def learn(self, words: list[str]) -> None:
        todo = [w for w in words if w not in self._known]
        for i in range(0, len(todo), 1024):
            chunk = todo[i : i + 1024]
            spaced = self.tok([" " + w for w in chunk], add_special_tokens=False)["input_ids"]
            bare = self.tok(chunk, add_special_tokens=False)["input_ids"]
            for w, a, b in zip(chunk, spaced, bare):
                self._known[w] = any(len(ids) == 1 and ids[0] != self.unk for ids in (a, b))

    def known(self, word: str) -> bool:
        if word not in self._known:
            self.learn([word])
        return self._known[word]


def pii_per_document(texts: list[str], config: PipelineConfig, limit: int) -> list[int]:
    from tasks.pii import scrub_texts

    sample = texts[:limit]
    return [sum(found.values()) for _, found in scrub_texts(sample, config.pii)] if sample else []


def measure(loaded: Loaded, tok: TokenizerView | None, config: PipelineConfig, t: DriftThresholds,
            scrubbed: bool = False) -> Side:
    words = word_counts(loaded.sample)
    oov = None
    if tok is not None:
        tok.learn(list(words))
        oov = drift_stats.oov_rate(words, tok.known)
    tokens = tok.token_counts(loaded.sample) if tok is not None else words
    pii = None
    if config.pii.enabled:
        if scrubbed:  # texts already scrubbed: what the scrub found is in the pii_found column
            pii = drift_stats.per_document_rate(loaded.pii_found or []) if loaded.pii_found is not None else None
        else:
            pii = drift_stats.per_document_rate(pii_per_document(loaded.sample, config, t.pii_sample_size))
    return Side(documents=loaded.documents, lengths=loaded.lengths, token_counts=dict(tokens), oov_rate=oov,
                pii_per_document=pii)


# ------------------------------------------------------------------------------------------ the flow


@task(name="read-drop", cache_policy=NO_CACHE)
def read_drop(path: str, config: PipelineConfig, store: str) -> dict[str, Any]:
    """Ingest and clean ``path`` into snapshots, as a retrain would (reused when unchanged)."""
    from tasks.clean import clean_snapshot
    from tasks.ingest import ingest_to_snapshot

    if snapshot.is_snapshot(path):
        ref = snapshot.open_input(path, Path(store))
        return {"snapshot": ref.path, "ingested": ref.rows, "quarantined": 0, "stage": ref.stage}
    raw = ingest_to_snapshot([path], config.ingest, config.dask, Path(store))
    cleaned = clean_snapshot(raw, config.clean, config.dask, Path(store))
    stats = raw.manifest()["stats"]
    return {"snapshot": cleaned.path, "ingested": stats.get("documents"), "quarantined": stats.get("quarantined"),
            "stage": "clean"}


@task(name="find-reference", cache_policy=NO_CACHE)
def find_reference(config: PipelineConfig, reference: str | None, state_home: str, work: str) -> Reference:
    state = StatePaths.from_env(state_home)
    found = champion_reference(config, state, Path(work))
    if found is not None and found.texts_snapshot:
        return found
    note = f"{found.description}; " if found is not None else "no @champion; "
    if reference:
        path = Path(reference).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"reference: no such file or folder: {path}")
        read = read_drop.fn(str(path), config, str(state.snapshots))
        return Reference(kind="path", description=f"{note}reference path {path}", texts_snapshot=read["snapshot"])
    return Reference(kind="none", description=f"{note}no reference path given: nothing to compare with")


@task(name="reference-tokenizer", cache_policy=NO_CACHE)
def reference_tokenizer(ref: Reference, config: PipelineConfig, state_home: str) -> tuple[str, str]:
    """Without the champion's tokenizer: the base model's, or a BPE trained on the reference (cached)."""
    from tasks.tokenizer import prepare

    state = StatePaths.from_env(state_home)
    m = json.loads((Path(ref.texts_snapshot) / snapshot.MANIFEST).read_text())
    snap = snapshot.SnapshotRef(path=ref.texts_snapshot, fingerprint=m["fingerprint"], rows=m["rows"], stage=m["stage"])
    tok = prepare(snap, config.tokenizer, config.model.base_model, state.tokenizers)
    how = "the base model's" if not tok.trained else "trained on the reference (no champion tokenizer)"
    return tok.path, how


@task(name="compare", cache_policy=NO_CACHE)
def compare_sides(ref: Reference, new_snapshot: str, tokenizer: str | None, config: PipelineConfig,
                  t: DriftThresholds) -> Comparison:
    reference = load_side(ref.texts_snapshot, t)
    new = load_side(new_snapshot, t)
    tok = TokenizerView(tokenizer) if tokenizer else None
    ref_side = measure(reference, tok, config, t, scrubbed=ref.scrubbed)
    new_side = measure(new, tok, config, t)
    return drift_stats.compare(ref_side, new_side, t, drift_stats.duplicate_rate(new.keys, set(reference.keys)))


def _load_config(config_file: str | None) -> PipelineConfig:
    if config_file:
        return load_config(config_file)
    for candidate in (DEFAULT_CONFIG, ROOT / DEFAULT_CONFIG):
        if Path(candidate).is_file():
            return load_config(candidate)
    return PipelineConfig()


def new_drift_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@flow(name="drift-monitor", log_prints=True)
def drift_monitor(
    dataset: str,
    new_data: str,
    reference: str | None = None,
    config_file: str | None = None,
    thresholds_file: str | None = None,
    force: bool = False,
    home: str | None = None,
) -> dict[str, Any]:
    """Compare the data drop at ``new_data`` with the @champion's training data (or ``reference``).

    Returns the report (``markdown`` holds the Markdown); on drift, emits ``tunegate.data.drift`` for
    ``tunegate.dataset.<dataset>`` so the retrain deployment's trigger starts a retrain on the new data.
    A drop already reported as drifted against the same reference is not reported again (a scheduled
    monitor would otherwise start a retrain on it every hour while its retrain is blocked) unless
    ``force``. A ``new_data`` path that does not exist yet (an empty landing folder) is "no new data":
    reported on the flow run, nothing written.
    """
    log = get_run_logger()
    if not DATASET_NAME.match(dataset):
        raise ValueError(f"dataset: {dataset!r} is not a valid name (letters, digits, '_' and '-')")
    state = StatePaths.from_env(home)
    config = _load_config(config_file)
    t = drift_stats.load_thresholds(thresholds_file)
    drift_id = new_drift_id()
    out = state.home / "drift" / drift_id
    path = Path(new_data).expanduser().resolve()
    rep: dict[str, Any] = {"dataset": dataset, "new_data": str(path), "drift_id": drift_id, "drift": False,
                           "report": str(out / "report.md"), "thresholds": t.model_dump(),
                           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        if not path.exists():
            rep.update(decision="no new data", note=f"new data path does not exist: {path}", report=None)
            log.info("no new data for %s: %s does not exist", dataset, path)
            return finish(rep, None)
        ref = find_reference(config, reference, str(state.home), str(state.home / "drift" / ".champion"))
        rep["reference"] = ref.model_dump()
        if not ref.texts_snapshot:
            rep.update(decision="no reference", note=ref.description)
            log.warning("no reference for %s: %s", dataset, ref.description)
            return finish(rep, out)
        drop = read_drop(str(path), config, str(state.snapshots))
        rep["new"] = drop
        tokenizer, how = ref.tokenizer, ref.tokenizer_source
        if not tokenizer:
            tokenizer, how = reference_tokenizer(ref, config, str(state.home))
        rep["tokenizer"] = {"path": tokenizer, "source": how}
        result = compare_sides(ref, drop["snapshot"], tokenizer, config, t)
        rep.update(decision=result.decision, drift=result.drift, statistics=result.statistics,
                   checks=[c.model_dump() for c in result.checks])
        if result.drift:
            fired = "; ".join(c.describe() for c in result.checks if c.drifted)
            key = {"dataset": dataset, "new": _fingerprint(drop["snapshot"]), "reference": _fingerprint(ref.texts_snapshot)}
            earlier = None if force else already_reported(state, key)
            if earlier:
                rep["note"] = f"this drop was already reported as drifted against this reference in {earlier}: no new event"
                log.warning("drift in %s (%s), already reported in %s", dataset, fired, earlier)
            else:
                rep["event"] = emit_drift(rep)
                remember(state, key, drift_id)
                log.warning("drift in %s: %s; event %s emitted", dataset, fired, DRIFT_EVENT)
        else:
            log.info("no drift in %s (%s)", dataset, result.decision)
        return finish(rep, out)
    finally:
        from tasks.executor import close_clients

        close_clients()


def _fingerprint(snapshot_path: str) -> str:
    return json.loads((Path(snapshot_path) / snapshot.MANIFEST).read_text())["fingerprint"]


def _ledger(state: StatePaths) -> Path:
    return state.home / "drift" / "emitted.jsonl"


def already_reported(state: StatePaths, key: dict[str, str]) -> str | None:
    """The drift id that already emitted an event for this (dataset, drop, reference), if any."""
    ledger = _ledger(state)
    if not ledger.is_file():
        return None
    for line in ledger.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if all(row.get(k) == v for k, v in key.items()):
            return row.get("drift_id")
    return None


def remember(state: StatePaths, key: dict[str, str], drift_id: str) -> None:
    ledger = _ledger(state)
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger, "a") as fh:
        fh.write(json.dumps({**key, "drift_id": drift_id}) + "\n")


def emit_drift(rep: dict[str, Any]) -> dict[str, Any]:
    """Emit the drift event; returns what was emitted (id, event, resource)."""
    from prefect.events import emit_event

    stats = {k: v for k, v in (rep.get("statistics") or {}).items() if v is not None}
    payload = {
        "dataset": rep["dataset"],
        "new_data": rep["new_data"],
        "drift_id": rep["drift_id"],
        "report": rep["report"],
        "drifted": [c["name"] for c in rep.get("checks", []) if c["drifted"]],
        "statistics": stats,
        "reference": {k: rep["reference"].get(k) for k in ("kind", "model", "version", "fingerprint")},
    }
    resource = {"prefect.resource.id": f"{RESOURCE_PREFIX}{rep['dataset']}", "prefect.resource.name": rep["dataset"]}
    event = emit_event(event=DRIFT_EVENT, resource=resource, payload=payload)
    return {"event": DRIFT_EVENT, "resource": resource["prefect.resource.id"], "id": str(event.id) if event else None}


def finish(rep: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """Write report.md and report.json (unless ``out`` is None), attach the Markdown to the flow run;
    returns the report with its Markdown."""
    md = markdown(rep)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(md)
        (out / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=md, key=f"tunegate-drift-{rep['dataset'].lower().replace('_', '-')}",
                                 description=f"drift report {rep['drift_id']}: {rep.get('decision')}")
    except Exception as exc:  # the report on disk is what counts
        get_run_logger().warning("could not attach the drift report artifact: %s", exc)
    return {**rep, "markdown": md}


# ------------------------------------------------------------------------------------------ the report


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "—" if v is None else str(v)


def markdown(rep: dict[str, Any]) -> str:
    decision = rep.get("decision", "?")
    head = "DRIFT" if rep.get("drift") else decision.upper()
    parts = [f"# Drift report `{rep['drift_id']}` — dataset `{rep['dataset']}` — {head}", "",
             f"- new data: `{rep['new_data']}`"]
    if rep.get("new"):
        n = rep["new"]
        parts.append(f"- new documents: {_fmt((rep.get('statistics') or {}).get('documents_new'))} after cleaning "
                     f"({_fmt(n.get('ingested'))} ingested, {_fmt(n.get('quarantined'))} quarantined)")
    if rep.get("reference"):
        parts.append(f"- reference: {rep['reference']['description']}")
    if rep.get("tokenizer"):
        parts.append(f"- tokenizer: {rep['tokenizer']['source']} (`{rep['tokenizer']['path']}`)")
    if rep.get("note"):
        parts += ["", f"**{rep['note']}**"]
    if decision == "nothing new":
        parts += ["", f"**{_fmt(rep['statistics'].get('duplicate_rate'))} of the new documents are already in the "
                      "reference: nothing new to train on, no drift event.**"]
    if decision == "too little data":
        parts += ["", f"**Fewer than {rep['thresholds']['min_documents']} new documents: no decision.**"]
    if rep.get("checks"):
        rows = [[c["name"], _fmt(c["value"]), "off" if c["threshold"] is None else f"> {_fmt(c['threshold'])}",
                 "DRIFT" if c["drifted"] else "ok", c.get("detail", "")] for c in rep["checks"]]
        parts += ["", "## Checks", "", "| check | value | drift when | result | detail |", "|---|---|---|---|---|",
                  *["| " + " | ".join(r) + " |" for r in rows]]
        s = rep["statistics"]
        side = [["documents", s.get("documents_reference"), s.get("documents_new")],
                ["mean length (chars)", s.get("mean_length_reference"), s.get("mean_length_new")],
                ["OOV rate", s.get("oov_rate_reference"), s.get("oov_rate_new")],
                ["PII entities / document", s.get("pii_per_document_reference"), s.get("pii_per_document_new")],
                ["already in the reference", None, s.get("duplicate_rate")]]
        parts += ["", "## Both sides", "", "| | reference | new |", "|---|---|---|",
                  *[f"| {a} | {_fmt(b)} | {_fmt(c)} |" for a, b, c in side]]
    ev = rep.get("event")
    if ev:
        parts += ["", f"Event `{ev['event']}` emitted for `{ev['resource']}` (id {ev['id']}): the retrain "
                      "deployment's trigger starts a retrain on the new data."]
    else:
        parts += ["", "No drift event emitted."]
    return "\n".join(parts) + "\n"
