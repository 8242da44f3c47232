"""Evaluation: text metrics against hand-computed values, generation, and evaluate_task end to end on tiny models."""

from __future__ import annotations

import json
import math

import pytest

from tasks.evaluate import text_metrics as tm
from tasks.train.canaries import CanarySettings, make_canaries, write_canaries
from tasks.evaluate.evaluate import (
    CANARY_KEYS,
    METRIC_KEYS,
    PROBE_ENTITIES,
    EvalSettings,
    evaluate_models,
    evaluate_task,
    heldout_pairs,
    read_prompt_file,
)
from tasks.evaluate.generation import GenerationSettings, generate
from tasks.evaluate.safety import probe_prompts

# ---------------------------------------------------------------------------------------------- text metrics


def test_exact_match_uses_squad_normalisation():
    assert tm.normalize_answer("  The Cat, sat!  ") == "cat sat"
    assert tm.exact_match(["The cat sat.", "a dog"], ["the  cat sat", "cat"]) == 50.0
    assert tm.exact_match(["Paris"], ["paris!"]) == 100.0
    assert tm.exact_match([], []) == 0.0


def test_rouge_matches_hand_computed_f_measures():
    # pred: the cat sat on the mat / ref: the cat lay on the mat
    # unigrams: 5 of 6 shared (the x2, cat, on, mat) -> P = R = F = 5/6; bigrams: the cat, on the, the mat of 5
    # -> 3/5; longest common subsequence: the cat on the mat, 5 of 6 -> 5/6
    scores = tm.rouge(["the cat sat on the mat"], ["the cat lay on the mat"])
    assert scores["rouge1"] == pytest.approx(100 * 5 / 6)
    assert scores["rouge2"] == pytest.approx(100 * 3 / 5)
    assert scores["rougeL"] == pytest.approx(100 * 5 / 6)
    # unequal lengths: pred "cat sat" / ref "the cat sat down": P = 1, R = 2/4 -> F = 2PR/(P+R) = 2/3
    # (rouge_score tokenizes on non-alphanumerics, lower-cased, so the punctuation does not count)
    two = tm.rouge(["Cat, sat!", "the cat sat on the mat"], ["the cat sat down", "the cat sat on the mat"])
    assert two["rouge1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert two["rouge2"] == pytest.approx(100 * (2 * 1 * (1 / 3) / (1 + 1 / 3) + 1) / 2)  # bigram P 1/1, R 1/3


def test_bleu_matches_hand_computed_values():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths, no brevity penalty -> (1/12) ** (1/4)
    assert tm.bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(100 * (1 / 12) ** 0.25)
    # every precision 1, hypothesis 4 words against 6: brevity penalty exp(1 - 6/4)
    assert tm.bleu(["the cat sat on"], ["the cat sat on the mat"]) == pytest.approx(100 * math.exp(-0.5))
    assert tm.bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
    # corpus BLEU pools the counts: not the mean of sentence scores
    pooled = tm.bleu(["the cat sat on the mat", "a b c d e"], ["the cat sat on a mat", "a b c d e"])
    # precisions (5+5)/(6+5), (3+4)/(5+4), (2+3)/(4+3), (1+2)/(3+2)
    assert pooled == pytest.approx(100 * (10 / 11 * 7 / 9 * 5 / 7 * 3 / 5) ** 0.25)


def test_chrf_matches_hand_computed_values():
    # characters of "ab" against "abc": unigrams P 2/2 R 2/3, bigrams P 1/1 R 1/2, higher orders have no
    # hypothesis n-grams; averages P = 1, R = 7/12; F-beta with beta 2: 5PR / (4P + R) = 7/11
    assert tm.chrf(["ab"], ["abc"]) == pytest.approx(100 * 7 / 11)
    # corpus statistics pooled: unigrams 4/4 and 4/5, bigrams 2/2 and 2/3 -> P = 1, R = 11/15 -> 55/71
    assert tm.chrf(["ab", "ab"], ["abc", "ab"]) == pytest.approx(100 * 55 / 71)
    assert tm.chrf(["xyz"], ["abc"]) == 0.0


def test_metric_api_shape_and_errors():
    assert tm.load("bleu").compute(predictions=["a b c d"], references=["a b c d"]) == {"bleu": pytest.approx(100.0)}
    assert set(tm.load("all").compute(predictions=["x"], references=["y"])) == set(tm.METRIC_KEYS)
    assert tm.compute_all([], []) == dict.fromkeys(tm.METRIC_KEYS, 0.0)
    with pytest.raises(ValueError, match="unknown metric"):
        tm.load("meteor")
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        tm.bleu(["a", "b"], ["a"])


# ---------------------------------------------------------------------------------------------- prompt pairs


def test_heldout_pairs_keep_the_prompt_as_written():
    texts = ["one", "Alpha  beta\ngamma delta epsilon zeta", "a b c", "never used because two pairs are enough"]
    pairs = heldout_pairs(texts, count=2, prompt_words=3, reference_words=2)
    assert pairs == [("Alpha  beta\ngamma", "delta epsilon"), ("a", "b c")]  # short document: split at half


def test_prompt_file_pairs_and_errors(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "Q1", "reference": "A1"}, {"instruction": "Translate", "input": "chat", "output": "cat"},
            {"instruction": "Say hi", "input": "", "output": "hi"}, {"prompt": "over the limit", "reference": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    read = read_prompt_file(path, 3)
    assert [(p.set, p.prompt, p.reference, p.record) for p in read] == [
        ("prompts", "Q1", "A1", None),
        ("prompts", "Translate\n\nchat", "cat", ("Translate", "chat", "cat")),
        ("prompts", "Say hi", "hi", ("Say hi", "", "hi")),
    ]
    path.write_text('{"prompt": "ok", "reference": "ok"}\n{"question": "no"}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:2: needs string fields"):
        read_prompt_file(path, 10)
    with pytest.raises(FileNotFoundError, match="evaluate.prompts_file"):
        read_prompt_file(tmp_path / "missing.jsonl", 10)


# ---------------------------------------------------------------------------------------------- tiny models

WORDS = ("the river ran past the mill and the miller sang of winter bread while lanterns burned in every "
         "window of the village and letters came by coach from the city").split()


def _texts(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 50))) + "." for _ in range(n)]


def _tokenizer(texts: list[str]):
    from tasks.train.tokenizer import bpe_tokenizer

    return bpe_tokenizer(texts, vocab_size=320)


def _llama(tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and do not fight the other tests' processes for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(one_thread):
    tok = _tokenizer(_texts(60))
    return _llama(tok, seed=0), tok


def test_generation_batches_match_one_by_one_and_return_continuations_only(tiny):
    import torch

    model, tok = tiny
    prompts = ["the river", "", "letters came by coach from the city and the miller sang of winter", "bread"]
    settings = GenerationSettings(max_new_tokens=10)
    batched = generate(model, tok, prompts, settings, batch_size=4)
    single = [generate(model, tok, [p], settings)[0] for p in prompts]
    assert batched == single  # left padding: a row's continuation does not depend on its neighbours
    # the continuation only: what transformers' own greedy decoding adds after [EOS] + the prompt's tokens
    ids = torch.tensor([[tok.eos_token_id] + tok("the river", add_special_tokens=False)["input_ids"]])
    direct = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                            pad_token_id=tok.pad_token_id)
    assert batched[0] == tok.decode(direct[0, ids.shape[1]:], skip_special_tokens=True)
    assert len(direct[0]) - ids.shape[1] <= 10
    assert generate(model, tok, [], settings) == []


def test_sampling_is_seeded_and_leaves_the_global_generator_alone(tiny):
    import torch

    model, tok = tiny
    prompts = ["the river", "the mill", "winter"]
    sampled = GenerationSettings(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = generate(model, tok, prompts, sampled)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert generate(model, tok, prompts, sampled) == first
    other = generate(model, tok, prompts, sampled.model_copy(update={"seed": 8}))
    assert other != first
    greedy = [GenerationSettings(max_new_tokens=12, seed=s) for s in (0, 1)]
    assert generate(model, tok, prompts, greedy[0]) == generate(model, tok, prompts, greedy[1])


def test_prefix_tuned_models_generate_what_their_forward_pass_predicts(tiny):
    """model.generate drops PEFT's prefix after the first step (peft 0.21, transformers 5.24): generate()
    decodes prompt-learning models with its own loop, which must agree with a greedy loop over forward()."""
    import torch
    from peft import PrefixTuningConfig, get_peft_model

    from tasks.evaluate.generation import encode_prompts

    base, tok = tiny
    torch.manual_seed(1)
    model = get_peft_model(_llama(tok, seed=0), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 1)
    model.eval()
    prompts = ["the river", "letters came by coach from the city and the miller", ""]
    expected = []
    with torch.no_grad():
        for ids in encode_prompts(tok, prompts):
            ids = torch.tensor([ids])
            for _ in range(8):
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
            expected.append(ids[0, -8:].tolist())
    outputs = generate(model, tok, prompts, GenerationSettings(max_new_tokens=8), batch_size=3)
    assert outputs == [tok.decode(e, skip_special_tokens=True) for e in expected]
    assert outputs != generate(base, tok, prompts, GenerationSettings(max_new_tokens=8))
    sampled = GenerationSettings(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=2)
    assert generate(model, tok, prompts, sampled) == generate(model, tok, prompts, sampled)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, one_thread):
    """base (random tiny Llama), candidate (a LoRA adapter on it), champion (a full model folder), eval texts."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("eval-models")
    texts = _texts(60)
    tok = _tokenizer(texts)
    base = _llama(tok, seed=0)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "tok")
    lora = get_peft_model(_llama(tok, seed=0), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False))
    lora.save_pretrained(root / "adapter")
    _llama(tok, seed=1).save_pretrained(root / "full")  # what a "full" fine-tune leaves: config.json, weights
    eval_path = root / "eval.jsonl"
    eval_path.write_text("".join(json.dumps({"doc_id": str(i), "text": t}) + "\n" for i, t in enumerate(texts[:6])))
    prompts = root / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "the river ran", "reference": "past the mill"}) + "\n"
                       + json.dumps({"instruction": "Continue", "input": "the miller sang", "output": "of bread"}) + "\n")
    canaries = make_canaries(CanarySettings(count=2, candidates=50, seed=3))
    write_canaries(root / "canaries.json", canaries, CanarySettings(count=2, candidates=50, seed=3))
    models = {
        "base": {"base": str(root / "base"), "tokenizer": str(root / "tok")},
        "candidate": {"base": str(root / "base"), "adapter": str(root / "adapter"), "tokenizer": str(root / "tok")},
        "champion": {"base": str(root / "base"), "adapter": str(root / "full"), "tokenizer": str(root / "tok")},
    }
    settings = EvalSettings(seq_len=64, heldout_prompts=4, prompt_words=12, reference_words=8, prompts_file=prompts,
                            generation=GenerationSettings(max_new_tokens=8))
    return models, str(eval_path), settings, str(root / "canaries.json")


@pytest.fixture(scope="module")
def evaluated(saved_models, tmp_path_factory):
    models, eval_path, settings, canaries = saved_models
    cache = tmp_path_factory.mktemp("eval-cache")
    first = evaluate_models(models, eval_path, settings, canaries, cache_dir=cache)
    second = evaluate_task.fn(models, eval_path, settings, canaries)  # the Prefect task's own function
    without = evaluate_models({"base": models["base"]}, eval_path, settings)
    again = evaluate_models(models, eval_path, settings, canaries, cache_dir=cache)
    return first, second, without, again


def test_evaluate_returns_every_metric_for_every_model(evaluated, saved_models):
    first, _, without, _ = evaluated
    settings = saved_models[2]
    assert set(first) == {"base", "candidate", "champion"}
    for name, result in first.items():
        assert set(result.metrics) == set(METRIC_KEYS) | set(CANARY_KEYS), name
        assert all(isinstance(v, float) and math.isfinite(v) for v in result.metrics.values()), result.metrics
        assert result.metrics["perplexity"] > 1.0 and result.metrics["bits_per_byte"] > 0.0
        assert all(0.0 <= result.metrics[k] <= 100.0 for k in tm.METRIC_KEYS)
        assert set(result.pii_leaks) == set(PROBE_ENTITIES)
        assert result.metrics["pii_leaked"] == sum(result.pii_leaks.values())
        assert [c["prefix"] for c in result.canaries] == [c.prefix for c in make_canaries(
            CanarySettings(count=2, candidates=50, seed=3))]
        assert all(1 <= c["rank"] <= 51 and c["candidates"] == 50 for c in result.canaries)
        # one score per scored answer; their means are the corpus ROUGE and exact match
        assert len(result.per_example["rougeL"]) == 2 and result.scored_sets == ["prompts"]
        assert result.metrics["rougeL"] == pytest.approx(sum(result.per_example["rougeL"]) / 2)
        assert result.metrics["exact_match"] == pytest.approx(sum(result.per_example["exact_match"]) / 2)
    assert set(without["base"].metrics) == set(METRIC_KEYS)  # canary metrics only when canaries are planted
    assert without["base"].canaries == []
    # the same prompts, in the same order, for every model: the file's 2 (they are the task, so no held-out
    # continuations), then the probe prompts
    sets = [[(g.set, g.prompt, g.reference) for g in r.generations] for r in first.values()]
    assert sets[0] == sets[1] == sets[2]
    kinds = [s for s, _, _ in sets[0]]
    assert kinds == ["prompts"] * 2 + ["pii_probe"] * len(probe_prompts(settings.pii_probe_prompts))
    assert sets[0][0] == ("prompts", "the river ran", "past the mill")
    assert sets[0][1] == ("prompts", "Continue\n\nthe miller sang", "of bread")


def test_without_instructions_or_prompts_held_out_continuations_are_the_task(saved_models):
    models, eval_path, settings, _ = saved_models
    plain = settings.model_copy(update={"prompts_file": None, "pii_probe_entities": []})
    result = evaluate_models({"base": models["base"]}, eval_path, plain)["base"]
    assert [g.set for g in result.generations] == ["heldout"] * 4 and result.scored_sets == ["heldout"]
    assert all(len(g.prompt.split()) == 12 and len(g.reference.split()) == 8 for g in result.generations)


def test_evaluate_is_deterministic_and_loads_each_kind_of_model(evaluated):
    first, second, without, _ = evaluated
    for name in first:
        assert first[name].model_dump(exclude={"seconds"}) == second[name].model_dump(exclude={"seconds"}), name
    assert without["base"].generations == first["base"].generations
    outputs = {name: [g.output for g in r.generations] for name, r in first.items()}
    assert outputs["candidate"] != outputs["base"]  # the adapter is applied
    assert outputs["champion"] != outputs["base"]  # the full model folder is loaded instead of the base
    ppl = {name: r.metrics["perplexity"] for name, r in first.items()}
    assert len(set(ppl.values())) == 3


def test_a_model_scored_on_the_same_inputs_is_read_from_the_cache(evaluated, saved_models, tmp_path):
    first, _, _, again = evaluated
    assert not any(r.reused for r in first.values()) and all(r.reused for r in again.values())
    for name in first:
        same = {"reused", "seconds", "saved_seconds"}
        assert again[name].model_dump(exclude=same) == first[name].model_dump(exclude=same), name
        assert again[name].seconds == 0 and again[name].saved_seconds == first[name].seconds > 0
    # another input (here one more prompt) is another key: the model is evaluated again
    models, eval_path, settings, canaries = saved_models
    cache = tmp_path / "c"
    evaluate_models({"base": models["base"]}, eval_path, settings, canaries, cache_dir=cache)
    more = settings.model_copy(update={"max_prompts": 1})
    assert not evaluate_models({"base": models["base"]}, eval_path, more, canaries, cache_dir=cache)["base"].reused
    assert evaluate_models({"base": models["base"]}, eval_path, more, canaries, cache_dir=cache)["base"].reused


def test_compare_gives_paired_intervals_of_the_candidates_differences(evaluated, saved_models):
    from tasks.evaluate.evaluate import compare

    first = evaluated[0]
    deltas = compare(first, saved_models[2])
    assert set(deltas) == {"base", "champion"}
    d = deltas["base"]["rougeL"]
    assert d.n == 2 and d.low <= d.mean <= d.high
    assert d.mean == pytest.approx(first["candidate"].metrics["rougeL"] - first["base"].metrics["rougeL"])


def test_probe_entities_are_checked_against_the_pii_detector():
    assert EvalSettings(pii_probe_entities=["email_address", " API_KEY "]).pii_probe_entities == ["EMAIL_ADDRESS",
                                                                                              "API_KEY"]
    with pytest.raises(ValueError, match=r"unknown PII entity types \['EMAIL'\]"):
        EvalSettings(pii_probe_entities=["EMAIL"])
    assert list(EvalSettings().pii_probe_entities) == PROBE_ENTITIES
