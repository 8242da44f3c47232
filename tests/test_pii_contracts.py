"""PII scrubbing with the real Presidio engine, and contracts with real Great Expectations."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from flows.config import ConfigError, load_config
from tasks.data.contracts import frame_for_contract, validate_frame
from tasks.data.pii.settings import PiiSettings
from tasks.data.pii.scrub import scrub_documents, scrub_texts

SUITE = ROOT / "data_contracts/curated.json"
SAMPLE = ("Please ask Maria Gonzalez in Chicago. Write to maria.gonzalez@example.org or call +1 415-555-0132; "
          "card 4111 1111 1111 1111, server 10.20.30.40.")


def test_default_scrub_replaces_entities_with_type():
    (text, found), = scrub_texts([SAMPLE], PiiSettings())
    for secret in ("Maria Gonzalez", "maria.gonzalez@example.org", "415-555-0132", "4111 1111 1111 1111", "10.20.30.40"):
        assert secret not in text
    assert "<EMAIL_ADDRESS>" in text and "<CREDIT_CARD>" in text and "<PERSON>" in text
    assert found["EMAIL_ADDRESS"] == 1 and found["CREDIT_CARD"] == 1


def test_operator_per_entity_and_entity_choice():
    settings = PiiSettings(entities=["EMAIL_ADDRESS", "CREDIT_CARD"], operators={"CREDIT_CARD": "mask"})
    (text, found), = scrub_texts([SAMPLE], settings)
    assert "Maria Gonzalez" in text  # PERSON not asked for
    assert "<EMAIL_ADDRESS>" in text and "*******************" in text
    assert set(found) == {"EMAIL_ADDRESS", "CREDIT_CARD"}


def test_encrypt_needs_a_key_from_the_environment(monkeypatch):
    settings = PiiSettings(entities=["EMAIL_ADDRESS"], operator="encrypt")
    monkeypatch.delenv("TUNEGATE_PII_KEY", raising=False)
    with pytest.raises(ValueError, match="TUNEGATE_PII_KEY"):
        scrub_texts([SAMPLE], settings)
    monkeypatch.setenv("TUNEGATE_PII_KEY", "0123456789abcdef")
    (text, _), = scrub_texts([SAMPLE], settings)
    assert "maria.gonzalez@example.org" not in text and "0123456789abcdef" not in text


def test_scrub_documents_adds_counts_column():
    found: Counter = Counter()
    docs = scrub_documents([{"doc_id": "1", "text": SAMPLE}, {"doc_id": "2", "text": "nothing here"}],
                           PiiSettings(), found)
    assert json.loads(docs[1]["pii_found"]) == {} and json.loads(docs[0]["pii_found"])["EMAIL_ADDRESS"] == 1
    assert found["PHONE_NUMBER"] >= 1


def frame(texts: list[str], ids: list[str] | None = None) -> pd.DataFrame:
    import pyarrow as pa

    ids = ids or [str(i) for i in range(len(texts))]
    return frame_for_contract(pa.table({"doc_id": ids, "text": texts}))


GOOD = ("A perfectly ordinary paragraph about training schedules and evaluation gates, with nothing secret in it "
        "at all, written only to fill a contract test. ")


def goods(n: int) -> list[str]:
    return [GOOD + f"Paragraph number {i}." for i in range(n)]


def test_contract_passes_on_clean_data():
    result = validate_frame(frame(goods(12)), SUITE)
    assert result.passed and result.failures == []


@pytest.mark.parametrize(
    "texts, ids, failed",
    [
        (goods(5), None, "expect_table_row_count_to_be_between"),
        (goods(11) + [GOOD + "mail a.b@example.com"], None, "expect_column_values_to_not_match_regex"),
        (goods(11) + [GOOD + "call (212) 555-0199"], None, "expect_column_sum_to_be_between"),
        (goods(12), ["same"] * 12, "expect_column_values_to_be_unique"),
        (goods(11) + ["short"], None, "expect_column_value_lengths_to_be_between"),
        ([GOOD] * 12, None, "expect_column_proportion_of_unique_values_to_be_between"),
    ],
)
def test_contract_failures_are_named(texts, ids, failed):
    result = validate_frame(frame(texts, ids), SUITE)
    assert not result.passed
    assert any(failed in f for f in result.failures), result.failures
    assert not any("example.com" in f or "555-0199" in f for f in result.failures)  # no PII in messages


def test_missing_suite_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.json")):
        validate_frame(frame(goods(1)), tmp_path / "nope.json")


@pytest.mark.parametrize("address_rules", [False, True])
def test_a_documents_output_does_not_depend_on_the_documents_scrubbed_with_it(address_rules):
    """No name propagation across documents (pii-6): a name the NER finds in one document is not scrubbed in
    another because they share a shard, and a false positive does not spread either ("Via Roma" is a name in the
    first Via Roma text's context; pii-5 made the second "974 <PERSON> 131"). The address rules (pii-7) see both
    Via Roma texts as the addresses they are."""
    docs = [{"doc_id": "1", "text": "The data owner for this corpus is Priya Raman; she approves access."},
            {"doc_id": "2", "text": "Ticket 2: Priya Raman wrote from priya.raman@example.com asking why."},
            {"doc_id": "3", "text": "Josef had given Josef his address: 6138 Via Roma 131"},
            {"doc_id": "4", "text": "974 Via Roma 131\n Apt. 425\n Montafia\n Italy 39767"}]
    settings = PiiSettings(address_rules=address_rules)
    together = scrub_documents(docs, settings, Counter())
    alone = [scrub_documents([d], settings, Counter())[0] for d in docs]
    assert together == alone
    assert "<PERSON>" in together[0]["text"] and "974 <PERSON>" not in together[3]["text"]
    if address_rules:
        assert together[2]["text"].endswith("address: <LOCATION>") and "Via Roma" not in together[3]["text"]
    else:
        assert "<PERSON> 131" in together[2]["text"]


def test_metadata_strings_are_scrubbed_too():
    doc = {"doc_id": "1", "text": "Best regards from the team.",
           "metadata": json.dumps({"title": "Letter to Maria Gonzalez", "pages": 2})}
    (out,) = scrub_documents([doc], PiiSettings(), Counter())
    meta = json.loads(out["metadata"])
    assert "Maria Gonzalez" not in meta["title"] and meta["pages"] == 2


def test_a_failed_contract_names_the_offending_documents_with_the_match_masked(tmp_path):
    """"residual_pii 36" alone gave no clue: the failure names the source files and doc ids behind it, with
    the matched value masked, in the message and in the report."""
    from tasks.report import report
    from tasks.core import snapshot
    from tasks.data.contracts import validate_snapshot
    from tasks.core.records import make_document, to_table

    stats = [make_document(f"sports/results-{i}.txt", 0, GOOD + f"Season totals 4111 2222 3333 {4000 + i} goals.",
                           "text/plain", {}) for i in range(3)]
    docs = [make_document(f"docs/page-{i}.txt", 0, t, "text/plain", {}) for i, t in enumerate(goods(12))] + stats
    ref = snapshot.materialize(tmp_path / "snap", "curated", input_fingerprint="football", params={},
                               code_version="t", produce=lambda s, e: [to_table(docs)])
    result = validate_snapshot(ref, SUITE, "curated")
    failed = {e.expectation + (f":{e.column}" if e.column else ""): e for e in result.expectations if not e.success}
    card, total = failed["expect_column_values_to_not_match_regex:text"], failed["expect_column_sum_to_be_between:residual_pii"]
    for outcome in (card, total):
        assert {x["source"] for x in outcome.examples} == {d["source"] for d in stats}
        assert {x["doc_id"] for x in outcome.examples} == {d["doc_id"] for d in stats}
        assert all("41" in x["value"] and "*" in x["value"] and "2222" not in x["value"] for x in outcome.examples)
    message = "; ".join(result.failures)
    assert "sports/results-0.txt" in message and "4111 2222" not in message
    md = report.markdown({"run_id": "r", "status": "blocked", "contracts": [
        {**result.model_dump(mode="json"), "failures": result.failures}]})
    assert "Documents failing `expect_column_sum_to_be_between` on `residual_pii`" in md
    assert "`sports/results-1.txt`" in md and "3333" not in md


# ------------------------------------------------------------------------------------------ loud configuration

@pytest.mark.parametrize("section, field, message", [
    ({"entities": ["EMAIL", "PHONE"]}, "pii.entities", "unknown PII entity types ['EMAIL', 'PHONE']"),
    ({"entities": ["person", "Email_Adress"]}, "pii.entities", "unknown PII entity types ['EMAIL_ADRESS']"),
    ({"operators": {"EMAIL": "mask"}}, "pii.operators", "unknown PII entity types ['EMAIL']"),
    ({"propagate": ["PERSN"]}, "pii.propagate", "unknown PII entity types ['PERSN']"),
    ({"propagate": ["PERSON"]}, "pii.propagate", "name propagation was removed"),
])
def test_unknown_entity_names_fail_at_config_load_naming_the_field_and_the_valid_names(tmp_path, section, field,
                                                                                      message):
    from tasks.data.pii.settings import KNOWN_ENTITIES

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"pii": section}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "\n" not in text and f"{field}: " in text and message in text, text
    if "unknown" in message:
        assert all(name in text for name in KNOWN_ENTITIES), text


def test_known_entity_names_load_in_any_case(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"pii": {"entities": ["email_address", " Phone_Number", "US_PASSPORT"],
                                            "operators": {"phone_number": "mask"}, "propagate": []}}))
    pii = load_config(path).pii
    assert pii.entities == ["EMAIL_ADDRESS", "PHONE_NUMBER", "US_PASSPORT"]
    assert pii.operators == {"PHONE_NUMBER": "mask"}
