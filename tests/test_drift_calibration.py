"""The drift tests' false-alarm rate and power, measured on corpora written by others (issue 18, item 3).

Reference: 600 WikiText-2 paragraphs (what the champion was trained on), with a byte-level BPE trained on
them as the pipeline trains one without a base model, the default PII settings and data_contracts/drift.yaml.
100 drops of held-out WikiText paragraphs (new documents of the same kind, 10 to 60 of them) must raise at most 5
alarms; 20 drops of other kinds of text (self-instruct tasks, Shakespeare passages, presidio-research's PII
sentences) at least 19. The drops go through the product's comparison (``side_of_texts`` + ``compare``). The full
matrix (three references, four kinds, by drop size): bench/drift_calibration.py, figures in bench/RESULTS.md.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("drift_sets", ROOT / "bench" / "drift_sets.py")
drift_sets = importlib.util.module_from_spec(_spec)
sys.modules["drift_sets"] = drift_sets
_spec.loader.exec_module(drift_sets)

SIZES = (10, 12, 20, 40, 60)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tasks.data import drift_stats
    from tasks.data.pii.settings import PiiSettings
    from tasks.drift.measure import TokenizerView, side_of_texts
    from tasks.train.tokenizer import bpe_tokenizer

    if drift_sets.missing():
        pytest.fail("the drift calibration needs corpora written by others, missing here: "
                    + ", ".join(drift_sets.missing()))
    docs, held_out = drift_sets.split(drift_sets.wikitext(), 600)
    folder = tmp_path_factory.mktemp("bpe")
    bpe_tokenizer(docs, 4096).save_pretrained(str(folder))
    tok = TokenizerView(str(folder))
    t, pii = drift_stats.load_thresholds(), PiiSettings()
    return side_of_texts(docs, tok, pii, t), held_out, tok, t, pii


def alarms(reference, drops) -> tuple[int, list]:
    from tasks.data import drift_stats
    from tasks.drift.measure import side_of_texts

    ref_side, _, tok, t, pii = reference
    results = [drift_stats.compare(ref_side, side_of_texts(d, tok, pii, t), t, duplicate=0.0) for d in drops]
    return sum(r.drift for r in results), results


def test_drops_of_the_same_kind_rarely_alarm(reference):
    _, held_out, *_ = reference
    drops = drift_sets.drops(held_out, 100, SIZES, seed=1)
    fired, results = alarms(reference, drops)
    print(f"\nfalse alarms: {fired}/100; by test: "
          f"{sorted(c.name for r in results for c in r.checks if c.drifted)}")
    assert all(r.decision in ("drift", "no drift") for r in results)
    assert fired <= 5
    # every test that had enough data reported its p-value and effect size; the PII tests need 20 documents
    decided = [c for r in results for c in r.checks if c.decided]
    assert all(c.p_value is not None and c.value is not None for c in decided)
    assert {c.name for c in decided} == {"length_ks", "token_js", "unseen_words", "pii_structured_change",
                                         "pii_named_change"}


def test_drops_of_other_kinds_alarm(reference):
    kinds = [drift_sets.instructions(), drift_sets.shakespeare(), drift_sets.pii()]
    drops = [d for k, docs in enumerate(kinds) for d in drift_sets.drops(docs, 7, SIZES, seed=10 + k)][:20]
    fired, results = alarms(reference, drops)
    print(f"\ndetections: {fired}/{len(drops)}")
    assert len(drops) == 20 and fired >= 19
