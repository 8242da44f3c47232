"""Training throughput: tunegate's training step against a bare PyTorch + PEFT loop, same command.

tunegate: ``tasks.train.train.run_training`` on a TrainJob — the trainer subprocess, one process, DeepSpeed
ZeRO-2 — whose per-step ``tokens_per_s`` come from its metrics.jsonl. Bare: the same base model, the
same LoRA config through PEFT, ``torch.optim.AdamW`` with the same schedule and gradient clipping, the
same batches in the same order (``batch_indices``), in its own process with the same thread count.
Steady state = the steps after the first ``--skip`` (process start, model load and the first steps'
allocations excluded): total tokens / total step time. The two sides alternate for ``--rounds`` rounds;
each side's best round is reported, and the ratio of the bests.

    .venv/bin/python bench/train.py --model tiny --steps 20 --seq-len 256 --batch 8
    .venv/bin/python bench/train.py --model smollm2 --steps 10 --seq-len 256 --batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import describe  # noqa: E402

import tasks  # noqa: E402,F401  (offline environment first)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CORPUS = ROOT / "examples" / "corpus"


# -- setup: model, tokenizer, blocks ---------------------------------------------------------------------


def corpus_texts() -> list[str]:
    """The sample company's text (~140k characters): its manuals and policies, the support tickets, and the
    instruction records rendered as the snapshot holds them."""
    from tasks.data.instructions import to_text

    def records(name: str) -> list[dict]:
        return [json.loads(line) for line in (CORPUS / "records" / name).read_text().splitlines() if line.strip()]

    files = sorted((CORPUS / "manuals").glob("*.md")) + sorted((CORPUS / "policies").glob("*.txt"))
    return ([p.read_text(errors="ignore") for p in files] + [r["text"] for r in records("tickets.jsonl")]
            + [to_text(r["instruction"], r["output"], r["input"]) for r in records("assistant.jsonl")])


def tiny_model(work: Path) -> Path:
    """The tiny model of configs/tiny.yaml (hidden 256, 4 layers, BPE vocab 2048) built as tunegate builds it."""
    from tasks.train.model import TinyModelSettings, build_tiny
    from tasks.train.tokenizer import bpe_tokenizer

    bpe_tokenizer(corpus_texts(), vocab_size=2048, min_frequency=2).save_pretrained(str(work / "tokenizer"))
    out = work / "tiny"
    build_tiny(str(work / "tokenizer"), TinyModelSettings(hidden_size=256, layers=4, heads=4, intermediate_size=688), out)
    return out


def smollm2_model(store: Path) -> Path:
    sys.path.insert(0, str(ROOT / "infra"))
    from fetch_smollm2 import DEFAULT_DEST, fetch

    from tasks.train.model import ModelSettings, prepare

    gguf = fetch(ROOT / DEFAULT_DEST)
    return Path(prepare(ModelSettings(base_model=str(gguf)), "", "", store).path)


def make_blocks(model_dir: Path, seq_len: int, out: Path) -> int:
    import numpy as np
    from transformers import AutoTokenizer

    from tasks.train.dataset import pack

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    blocks = pack(tok(corpus_texts(), add_special_tokens=False)["input_ids"], tok.eos_token_id, seq_len)
    np.save(out, blocks)
    return int(blocks.shape[0])


def settings(args, threads: int):
    from tasks.train.trainer.job import TrainSettings

    fields = dict(max_steps=args.steps, micro_batch_size=args.batch, seq_len=args.seq_len, learning_rate=args.lr,
                  warmup_steps=1, lora_r=8, lora_alpha=16, lora_dropout=0.05, target_modules=LORA_TARGETS,
                  zero_stage=2, num_processes=1, checkpoint_every=args.steps, keep_checkpoints=1,
                  threads_per_process=threads)
    if "reuse" in TrainSettings.model_fields:
        fields["reuse"] = False  # a benchmark trains every time
    return TrainSettings(**fields)


# -- the two sides -----------------------------------------------------------------------------------------


def run_tunegate(job_kwargs: dict, out: Path, ext: Path) -> list[dict]:
    from tasks.train.train import TrainJob, read_metrics, run_training

    job = TrainJob(**job_kwargs, out_dir=str(out))
    run_training(job, ext, echo=lambda line: None)
    return [{"step": m["step"], "loss": m["loss"], "dt": m["step_time_s"]} for m in read_metrics(out / "metrics.jsonl")]


def bare_worker(job_path: Path) -> None:
    """The bare loop, in its own process (as tunegate's trainer is): PEFT LoRA + torch AdamW, nothing else."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tasks.train.trainer.job import TrainSettings
    from tasks.train.trainer.recipe import batch_indices, lr_lambda

    spec = json.loads(job_path.read_text())
    s = TrainSettings(**spec["settings"])
    torch.set_num_threads(s.threads())
    torch.manual_seed(s.seed)
    model = AutoModelForCausalLM.from_pretrained(spec["base_model"], dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                                             target_modules=s.target_modules, task_type="CAUSAL_LM"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=s.learning_rate, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(s))
    blocks = np.load(spec["train_blocks"], mmap_mode="r")
    model.train()
    rows = []
    for step in range(1, s.max_steps + 1):
        t0 = time.perf_counter()
        idx = np.sort(batch_indices(step, 0, 0, s, 1, blocks.shape[0]))
        batch = torch.from_numpy(np.asarray(blocks[idx], dtype=np.int64))
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, s.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        rows.append({"step": step, "loss": loss.item(), "dt": time.perf_counter() - t0})
    Path(spec["out"]).write_text(json.dumps(rows))


def run_bare(job_kwargs: dict, out: Path, threads: int, mkl_strict: bool = False) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    spec = {**job_kwargs, "settings": job_kwargs["settings"].model_dump(mode="json"), "out": str(out / "rows.json")}
    (out / "job.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if mkl_strict:  # the variables tasks/train/train.py sets for the trainer (bit-for-bit resumable CPU math)
        env.update(MKL_DYNAMIC="FALSE", MKL_CBWR="AUTO,STRICT")
    proc = subprocess.run([sys.executable, __file__, "--bare-worker", str(out / "job.json")], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bare loop failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "rows.json").read_text())


def steady(rows: list[dict], skip: int, tokens_per_step: int) -> dict:
    kept = [r for r in rows if r["step"] > skip]
    return {
        "tokens_per_s": tokens_per_step * len(kept) / sum(r["dt"] for r in kept),
        "median_step_s": statistics.median(r["dt"] for r in kept),
        "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--skip", type=int, default=2, help="first steps left out of the steady state")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of both sides")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--bare-mkl-strict", action="store_true",
                   help="also time the bare loop under the trainer's MKL_DYNAMIC=FALSE MKL_CBWR=AUTO,STRICT")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--bare-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_worker:
        bare_worker(args.bare_worker)
        return 0
    if args.steps <= args.skip:
        p.error("--steps must exceed --skip")

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        model_dir = tiny_model(work) if args.model == "tiny" else smollm2_model(ROOT / ".tunegate" / "models")
        n_blocks = make_blocks(model_dir, args.seq_len, work / "blocks.npy")
        print(f"model {args.model} at {model_dir} ready in {time.perf_counter() - t:.1f}s; {n_blocks} blocks of "
              f"{args.seq_len + 1} tokens", flush=True)
        job = dict(settings=settings(args, args.threads), base_model=str(model_dir), tokenizer=str(model_dir),
                   train_blocks=str(work / "blocks.npy"))
        tokens_per_step = args.batch * args.seq_len
        ext = ROOT / ".tunegate" / "torch_extensions"
        results: dict[str, list[dict]] = {"tunegate": [], "bare": []}
        if args.bare_mkl_strict:
            results["bare+mkl-strict"] = []
        for r in range(args.rounds):
            order = ["tunegate", *[k for k in results if k != "tunegate"]]
            order = order if r % 2 == 0 else order[::-1]
            for side in order:
                out = work / f"{side}-{r}"
                rows = (run_tunegate(job, out, ext) if side == "tunegate" else
                        run_bare(job, out, args.threads, mkl_strict=side != "bare"))
                results[side].append(steady(rows, args.skip, tokens_per_step))
                print(f"round {r + 1} {side:15s} {results[side][-1]['tokens_per_s']:9.1f} tokens/s "
                      f"(median step {results[side][-1]['median_step_s']:.3f}s, loss "
                      f"{results[side][-1]['first_loss']:.3f} -> {results[side][-1]['last_loss']:.3f})", flush=True)

    best = {k: max(v, key=lambda x: x["tokens_per_s"]) for k, v in results.items()}
    ratio = best["tunegate"]["tokens_per_s"] / best["bare"]["tokens_per_s"]
    per_round = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(results["tunegate"], results["bare"])]
    print()
    print(f"{args.model}: {args.steps} steps of {args.batch} x {args.seq_len} tokens, LoRA r8 on "
          f"{','.join(LORA_TARGETS)}, {args.threads} threads, steady state after step {args.skip}, "
          f"best of {args.rounds} ({describe('torch', 'peft', 'deepspeed')})")
    print("| loop | tokens/s | median step s | loss first -> last |")
    print("|---|---:|---:|---|")
    for side in [k for k in results if k != "tunegate"] + ["tunegate"]:
        b = best[side]
        print(f"| {side} | {b['tokens_per_s']:.0f} | {b['median_step_s']:.3f} | "
              f"{b['first_loss']:.3f} -> {b['last_loss']:.3f} |")
    print(f"ratio tunegate / bare: {ratio:.3f} (per round: {', '.join(f'{x:.3f}' for x in per_round)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
