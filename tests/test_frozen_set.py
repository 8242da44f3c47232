"""A stable evaluation set per dataset (issue 18, item 2): frozen the first time, versioned by content hash,
extended only on purpose (`tunegate evalset add`), kept out of training, named by every gate result.
(tests/test_retrain_tiny.py checks a second run is judged on the first run's set; tests/test_drift_retrain.py
the drift-started retrain.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import company_documents, run_cli


def rows(*texts: str, prefix: str = "d") -> list[dict]:
    return [{"doc_id": f"{prefix}{i}", "text": t} for i, t in enumerate(texts)]


def write_rows(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def test_a_set_is_frozen_once_and_grows_only_on_purpose(tmp_path):
    from tasks.core.state import StatePaths
    from tasks.evaluate import frozen_set

    state = StatePaths(tmp_path / "home")
    assert frozen_set.current(state, "corpus") is None
    split = write_rows(tmp_path / "eval.jsonl", rows("The arm stops when the door opens.",
                                                     "### Instruction:\nReset the arm.\n\n### Response:\nHold reset."))
    v1, froze = frozen_set.freeze(state, "corpus", split, "run one")
    assert froze and v1.version == 1 and (v1.documents, v1.instructions) == (1, 1) and v1.source == "run one"
    assert v1.label == f"corpus v1 ({v1.content_hash[:12]})"
    # a later run's split does not replace it
    other = write_rows(tmp_path / "other.jsonl", rows("Something else entirely, from another run.", prefix="o"))
    again, froze = frozen_set.freeze(state, "corpus", other, "run two")
    assert not froze and again == v1
    # extended on purpose: only what it does not hold (same text with other spacing, or the same id, is held)
    v2, added = frozen_set.extend(state, "corpus", [
        {"doc_id": "new1", "text": "The  arm stops when\nthe door opens."},
        {"doc_id": "d1", "text": "A new version of an item it holds."},
        {"doc_id": "new2", "text": "Battery swaps take four minutes."}], "evalset add extra.jsonl")
    assert added == 1 and v2.version == 2 and v2.size == 3 and v2.content_hash != v1.content_hash
    assert [r["text"] for r in frozen_set.read_rows(v2)][-1] == "Battery swaps take four minutes."
    assert frozen_set.read_rows(v1) == rows("The arm stops when the door opens.",
                                            "### Instruction:\nReset the arm.\n\n### Response:\nHold reset.")
    same, added = frozen_set.extend(state, "corpus", rows("Battery swaps take four minutes.", prefix="x"), "again")
    assert added == 0 and same == v2 and [v.version for v in frozen_set.versions(state, "corpus")] == [1, 2]
    # another dataset has a set of its own
    assert frozen_set.current(state, "tickets") is None


def test_a_frozen_file_changed_by_hand_is_refused(tmp_path):
    from tasks.core.state import StatePaths
    from tasks.evaluate import frozen_set

    state = StatePaths(tmp_path / "home")
    v1, _ = frozen_set.freeze(state, "corpus", write_rows(tmp_path / "eval.jsonl", rows("one", "two")), "run one")
    Path(v1.path).write_text(json.dumps({"doc_id": "d0", "text": "one"}) + "\n")
    with pytest.raises(ValueError, match=r"corpus v1 .* was changed after it was frozen"):
        frozen_set.current(state, "corpus")


def test_the_split_keeps_the_frozen_documents_out_of_training(tiny_training, tmp_path):
    """Documents of the frozen set leave the training side wherever the split put them: one by its id (its text
    edited since), one by its text (under another id); the held-out side is the split's own."""
    from tasks.core import snapshot
    from tasks.core.records import make_document, to_table
    from tasks.train import dataset

    tok, _, _ = tiny_training
    docs = [make_document(f"{p.parent.name}/{p.name}", 0, p.read_text(), "text/plain", {}) for p in company_documents()]
    ref = snapshot.materialize(tmp_path / "snap", "curated", input_fingerprint="company", params={}, code_version="t",
                               produce=lambda stats, extra: [to_table(docs)])
    plain = dataset.prepare(ref, tok.path, 64, dataset.SplitSettings(), tmp_path / "plain")
    train, held = dataset.split_sets(plain)
    by_id = {d["doc_id"]: d["text"] for d in docs}
    first, second = sorted(train)[:2]
    keep_out = write_rows(tmp_path / "frozen.jsonl", [{"doc_id": first, "text": "an older version of it"},
                                                      {"doc_id": "elsewhere", "text": "  " + by_id[second] + "\n"}])
    kept = dataset.prepare(ref, tok.path, 64, dataset.SplitSettings(), tmp_path / "kept", keep_out=str(keep_out))
    train_kept, held_kept = dataset.split_sets(kept)
    assert train_kept == train - {first, second} and held_kept == held and kept.kept_out == 2
    assert kept.train_tokens < plain.train_tokens


def test_gates_read_the_set_they_name():
    from tasks.evaluate.gates import Gate, check

    gates = [Gate(name="frozen_ppl", metric="perplexity", op="<", baseline="champion"),
             Gate(name="new_ppl", metric="perplexity", op="<", baseline="base", eval_set="new")]
    frozen = check(gates, {"perplexity": 10.0}, {"base": {"perplexity": 20.0}, "champion": {"perplexity": 11.0}},
                   eval_set="frozen", label="corpus v3 (abc)")
    new = check(gates, {"perplexity": 30.0}, {"base": {"perplexity": 20.0}}, eval_set="new", label="new data (4)")
    assert [(g.name, g.passed, g.eval_set_label) for g in frozen + new] == [
        ("frozen_ppl", True, "corpus v3 (abc)"), ("new_ppl", False, "new data (4)")]
    assert "30, required < 20 on new data (4) (base 20)" in new[0].describe()
    assert check(gates, {}, {}, eval_set="new", label="none")[0].describe().startswith(
        "gate new_ppl: perplexity not measured on none")
    with pytest.raises(ValueError, match="eval_set: new measures .*pii_leaked is measured on the frozen set only"):
        Gate(name="x", metric="pii_leaked", op="<=", threshold=0, eval_set="new")


def test_evalset_add_and_list(tmp_path):
    """`tunegate evalset add`: read as `run` reads (instruction records and documents), PII scrubbed, a new version
    only when something is new; `list` shows the versions; a changed file makes `list` exit 1 naming it."""
    home = tmp_path / "home"
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"instruction": "How do I reset the KR-Picker 7 arm?",
                                 "output": "Hold the reset button for five seconds until the light blinks amber."})
                     + "\n" + json.dumps({"text": "The KR-Carrier 450 must be serviced every 500 hours. Write to "
                                                  "Jane Miller at jane.miller@example.com to book a visit."}) + "\n")
    first = run_cli("evalset", "add", str(extra), "--dataset", "tickets", home=home)
    assert first.returncode == 0, first.stderr
    assert "tickets: evaluation set tickets v1 (" in first.stdout and "2 added, 2 in all (1 documents, 1 instruction" \
        in first.stdout
    [stored] = list((home / "evalsets" / "tickets").glob("v1-*.jsonl"))
    texts = [json.loads(line)["text"] for line in stored.read_text().splitlines()]
    assert texts[0].startswith("### Instruction:\nHow do I reset") and "jane.miller@example.com" not in texts[1]
    again = run_cli("evalset", "add", str(extra), "--dataset", "tickets", home=home)
    assert again.returncode == 0 and "tickets: nothing new; the evaluation set stays tickets v1" in again.stdout
    listed = run_cli("evalset", "list", "--dataset", "tickets", home=home)
    assert listed.returncode == 0 and "evalset add " + str(extra) in listed.stdout
    missing = run_cli("evalset", "add", str(tmp_path / "nope.jsonl"), home=home)
    assert missing.returncode == 1 and missing.stderr.strip() == f"error: PATHS: no such file or folder: {tmp_path / 'nope.jsonl'}"
    stored.write_text(stored.read_text().replace("amber", "red"))
    broken = run_cli("evalset", "list", "--dataset", "tickets", home=home)
    assert broken.returncode == 1 and "was changed after it was frozen" in broken.stderr
