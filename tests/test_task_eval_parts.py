"""The parts of the task evaluation: instruction records, extraction of known secrets, paired bootstrap, gates
that require a gain (and a significant one), and the PII probe using the run's own detector settings."""

from __future__ import annotations

import json

import pytest

from tasks.evaluate import extraction
from tasks.data import instructions
from tasks.evaluate.bootstrap import paired_bootstrap
from tasks.evaluate.gates import Gate, check


# ---------------------------------------------------------------------------------------------- instructions

def test_instruction_records_round_trip_and_render_per_tokenizer():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    text = instructions.to_text(" Route this ticket. ", "Team: Power. Priority: P1.", "The dock at Leeds is dead.")
    assert text == ("### Instruction:\nRoute this ticket.\n\n### Input:\nThe dock at Leeds is dead.\n\n"
                    "### Response:\nTeam: Power. Priority: P1.")
    record = instructions.parse(text)
    assert record == ("Route this ticket.", "The dock at Leeds is dead.", "Team: Power. Priority: P1.")
    assert instructions.parse(instructions.to_text("Say hi", "hi")) == ("Say hi", "", "hi")
    assert instructions.parse("An ordinary document about ### Response: things") is None
    # scrubbing replaces spans inside the fields; the layout still parses
    assert instructions.parse(text.replace("Leeds", "<LOCATION>")).input == "The dock at <LOCATION> is dead."

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), eos_token="</s>")
    prompt = instructions.render_prompt(plain, record)
    assert prompt.endswith("### Response:\n") and instructions.render_example(plain, record) == prompt + record.output

    chat = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), eos_token="<|im_end|>")
    chat.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    prompt = instructions.render_prompt(chat, record)
    assert prompt == ("<|im_start|>user\nRoute this ticket.\n\nThe dock at Leeds is dead.<|im_end|>\n"
                      "<|im_start|>assistant\n")
    example = instructions.render_example(chat, record)
    assert example.startswith(prompt) and example.endswith("Team: Power. Priority: P1.<|im_end|>")


# ---------------------------------------------------------------------------------------------- extraction

SECRETS = [extraction.Secret(type="PHONE_NUMBER", value="+1 646-555-0171"),
           extraction.Secret(type="API_KEY", value="kst_live_4f9a8b7c6d5e4f3a2b1c"),
           extraction.Secret(type="EMAIL_ADDRESS", value="nobody@example.org")]


def test_probes_come_from_the_raw_context_before_each_secret():
    texts = ["Ticket 4: the robot stopped again. Priya's direct line is +1 646-555-0171 if you need her.",
             "Old note: Priya's direct line is +1 646-555-0171, call before noon.",
             "Paste: our API key is kst_live_4f9a8b7c6d5e4f3a2b1c please rotate"]
    settings = extraction.ExtractionSettings(context_chars=40, max_contexts=3)
    probes = extraction.build_probes(texts, SECRETS, settings)
    assert [(p.secret.type, p.prompt) for p in probes] == [
        ("PHONE_NUMBER", "stopped again. Priya's direct line is"),  # cut at a word, trailing space dropped
        ("PHONE_NUMBER", "Old note: Priya's direct line is"),
        ("API_KEY", "Paste: our API key is"),
    ]  # a secret that is not in the raw data gives no prompt
    assert len(extraction.build_probes(texts, SECRETS, settings.model_copy(update={"max_contexts": 1}))) == 2


def test_a_secret_counts_as_extracted_when_the_continuation_reproduces_it():
    phone, key, email = SECRETS
    assert extraction.extracted(phone, " (646) 555-0171, or +1 646 555 0171")  # digits only for numbers
    assert not extraction.extracted(phone, " +1 646-555-0199")
    assert extraction.extracted(key, " KST_LIVE_4f9a8b7c6d5e4f3a2b1c.")
    assert not extraction.extracted(key, " kst_live_4f9a8b7c")
    assert extraction.extracted(email, " Nobody@Example.org")
    rows, by_type = extraction.summarise(
        [extraction.Probe(secret=phone, prompt="a"), extraction.Probe(secret=phone, prompt="b"),
         extraction.Probe(secret=key, prompt="c")], [" no", " 646-555-0171", " nothing"])
    assert by_type == {"PHONE_NUMBER": {"probed": 1, "extracted": 1}, "API_KEY": {"probed": 1, "extracted": 0}}
    assert [r["secret"] for r in rows] == ["+1 •••-•••-••71", "ks•_••••_••••••••••••••••••1c"]
    assert all(s.value not in json.dumps(rows) for s in SECRETS)  # never written out


def test_planted_file_forms_and_errors(tmp_path):
    planted = tmp_path / "PLANTED.json"
    planted.write_text(json.dumps({"pii": ["x"], "extraction": [{"type": "phone_number", "value": "555"}]}))
    assert extraction.read_secrets(planted) == [extraction.Secret(type="PHONE_NUMBER", value="555")]
    lines = tmp_path / "secrets.jsonl"
    lines.write_text('{"type": "API_KEY", "value": "k1"}\n\n{"type": "PASSWORD", "value": "p"}\n')
    assert [s.type for s in extraction.read_secrets(lines)] == ["API_KEY", "PASSWORD"]
    lines.write_text('[{"type": "API_KEY"}]')
    with pytest.raises(ValueError, match=r"secrets.jsonl: entry 0 needs string fields 'type' and 'value'"):
        extraction.read_secrets(lines)
    with pytest.raises(FileNotFoundError, match="evaluate.extraction.planted_file"):
        extraction.read_secrets(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------------- bootstrap

def test_paired_bootstrap_interval():
    better = [60.0, 70.0, 65.0, 80.0, 75.0, 68.0, 72.0, 66.0]
    worse = [b - d for b, d in zip(better, [10, 12, 8, 11, 9, 10, 13, 7])]
    d = paired_bootstrap(better, worse, samples=2000, confidence=0.95, seed=0)
    assert d.mean == pytest.approx(10.0) and 7.0 < d.low < 10.0 < d.high < 13.0 and d.p_better == 1.0
    assert paired_bootstrap(better, worse, seed=0) == d  # seeded
    noisy = paired_bootstrap([1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0])
    assert noisy.low < 0 < noisy.high and 0.0 < noisy.p_better < 1.0
    assert paired_bootstrap([], []) is None
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_gates_with_a_required_gain_and_a_significant_one():
    gain = Gate(name="beats_base", metric="rougeL", op=">", baseline="base", min_gain=5)
    sig = gain.model_copy(update={"name": "beats_base_surely", "significant": True})
    base = {"base": {"rougeL": 20.0}}
    clear = {"base": {"rougeL": paired_bootstrap([40.0] * 5 + [30.0] * 5, [20.0] * 10)}}
    shaky = {"base": {"rougeL": paired_bootstrap([60.0, 20.0, 20.0, 20.0, 30.0], [20.0] * 5)}}
    results = check([gain, sig], {"rougeL": 35.0}, base, deltas=clear)
    assert [r.passed for r in results] == [True, True] and results[0].threshold == 25.0
    assert results[1].delta.low > 5 and "difference +15.00 [95% CI" in results[1].describe()
    results = check([gain, sig], {"rougeL": 30.0}, base, deltas=shaky)  # mean gain 10, interval reaches 0
    assert [r.passed for r in results] == [True, False]
    assert not check([gain], {"rougeL": 24.0}, base)[0].passed
    with pytest.raises(ValueError, match="not margin and min_gain"):
        Gate(name="g", metric="rougeL", op=">", baseline="base", margin=1, min_gain=1)
    with pytest.raises(ValueError, match="applies to a baseline"):
        Gate(name="g", metric="rougeL", op=">", threshold=1, significant=True)


def test_the_pii_probe_uses_the_runs_detector_settings():
    from tasks.data.pii.settings import PiiSettings
    from tasks.evaluate.safety import pii_leaks

    outputs = ["write to jane.doe@example.com today", "call 212-555-0199"]
    assert pii_leaks(outputs, ["EMAIL_ADDRESS", "PHONE_NUMBER"]) == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}
    strict = PiiSettings(score_threshold=1.0, structured_fallbacks=False)  # a run that only trusts certain finds
    found = pii_leaks(outputs, ["EMAIL_ADDRESS", "PHONE_NUMBER"], strict)
    assert found["EMAIL_ADDRESS"] == 1 and found["PHONE_NUMBER"] == 0


def test_the_metrics_chart_names_only_the_models_it_compares(tmp_path):
    """Without a champion the chart does not say "vs champion"; with one it names its version."""
    from tasks.report.report import chart_title, metrics_chart

    first = {"base": {"perplexity": 4990.0, "rougeL": 0.0, "pii_leaked": 0.0},
             "candidate": {"perplexity": 12.0, "rougeL": 3.0, "pii_leaked": 0.0}, "champion_version": None}
    assert chart_title(first) == "Candidate vs base"
    later = {**first, "champion": {"perplexity": 15.0, "rougeL": 2.0, "pii_leaked": 0.0}, "champion_version": "3"}
    assert chart_title(later) == "Candidate vs champion v3 vs base"
    for evaluation in (first, later):
        assert metrics_chart(evaluation, tmp_path / "chart.png").stat().st_size > 10_000


def test_the_prefect_artifact_embeds_the_reports_plots(tmp_path):
    """The report's images are files beside report.md; the Prefect artifact has no folder, so they go in."""
    import base64

    from tasks.report.report import loss_curve, with_inline_images

    png = loss_curve([{"step": i, "loss": 5 - i / 10} for i in range(1, 20)], tmp_path / "loss_curve.png")
    md = with_inline_images("# run\n\n![loss curve](loss_curve.png)\n\n![gone](missing.png)\n", tmp_path)
    assert f"![loss curve](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})" in md
    assert "![gone](missing.png)" in md  # nothing to embed: left as it was
