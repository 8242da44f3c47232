"""The serving gateway's overhead and hot-swap time (issue 14).

Two registered versions of the demo's base model (SmolLM2-135M-Instruct, dequantized by `tunegate prepare`),
each a LoRA adapter (rank 8 on q_proj and v_proj, random weights: the answers differ), in a registry of a
temporary state folder. The same prompts, greedy, the same number of new tokens, are answered:
- bare: in this process, by the gateway's own loading and generation code (``ServedVersions.complete``), one
  request at a time from 1 or 4 threads — what a careful user calling ``generate`` directly gets;
- gateway: over HTTP through `tunegate gateway` on loopback, from 1 or 4 client threads.
Then @champion moves to the other version: the time until the first answer from it, and each adapter's load
time. Prints a Markdown table; throughput ratio = gateway requests/s over bare requests/s.

    .venv/bin/python bench/gateway.py [--requests 24] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench-gateway"
PROMPTS = [
    "The release checklist says",
    "Before a firmware update, the technician must",
    "Our refund policy for damaged goods is",
    "The K-20 pump should be serviced every",
    "To reset a forgotten password, a customer",
    "The security policy requires that laptops",
    "Shipping to Northern Ireland takes",
    "The service level agreement promises",
]


def demo_base() -> Path:
    """The demo's dequantized base model (made by `make install` / `tunegate prepare`)."""
    from tasks.core.state import StatePaths

    found = sorted(StatePaths.from_env(os.environ.get("TUNEGATE_HOME") or ROOT / ".tunegate").models.glob("gguf-*"))
    if not found:
        sys.exit("no dequantized base model: run `make install` (or `tunegate prepare`) first")
    return found[0]


def lora_adapter(base: Path, out: Path, seed: int) -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    model.save_pretrained(str(out))
    return str(out)


def registry(home: Path, base: Path) -> str:
    from tasks.registry.register import register
    from tasks.registry.versions import promote
    from tasks.train.model import weights_fingerprint

    uri = f"sqlite:///{home / 'mlflow.db'}"
    fingerprint = weights_fingerprint(base)
    for k in (1, 2):
        register(uri, (home / "mlartifacts").as_uri(), NAME, f"bench{k}", base=str(base),
                 adapter=lora_adapter(base, home / f"adapter{k}", k), tokenizer=str(base),
                 tags={"base_model_fingerprint": fingerprint}, params={}, metrics={})
    promote(uri, NAME, "1")
    return uri


def off_main(fn):
    """``fn()`` on a thread of its own. Torch never runs on this process's main thread: a thread whose OpenMP
    team exists (the main thread's, once it ran torch) slows every other thread's torch work by ~1.5x on 2 cores
    (measured: 16 new tokens 0.77 s on the main thread, 1.18 s on a worker thread after it, 0.81-0.87 s on
    worker threads of a process whose main thread never ran torch). The gateway's main thread runs uvicorn's
    event loop, never torch; the bare side is measured the same way."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0] if out else None


def load(send, requests: int, concurrency: int) -> dict:
    """``send(i)`` for i in range(requests) from ``concurrency`` threads: requests/s and latency percentiles."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(k, requests, concurrency):
            t0 = time.perf_counter()
            send(i)
            with lock:
                latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=20)
    return {"rps": requests / wall, "p50": statistics.median(latencies), "p95": q[18]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    import httpx

    from tasks.evaluate.generation import SERVING_DEFAULTS
    from tasks.serve.versions import ServedVersions

    settings = SERVING_DEFAULTS.model_copy(update={"max_new_tokens": args.max_tokens})
    base = demo_base()
    print(describe("torch", "transformers", "peft", "fastapi", "uvicorn"))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        uri = off_main(lambda: registry(home, base))
        served = ServedVersions(uri, NAME, home / "bench-serving")
        off_main(served.refresh)
        version = served.version_for("champion")
        loads = {n: v.load_seconds for n, v in served.loaded.items()}
        off_main(lambda: served.complete(version, PROMPTS[:1], settings))  # warm-up, as the gateway's below
        rows = {}
        for c in (1, 4):
            rows[("bare", c)] = load(lambda i: served.complete(version, [PROMPTS[i % len(PROMPTS)]], settings),
                                     args.requests, c)
        served.loaded.clear()
        served.pool = None  # the bare side's models go before the gateway loads its own
        gc.collect()

        port = 18700 + os.getpid() % 200
        env = {**os.environ, "TUNEGATE_HOME": str(home)}
        env.pop("MLFLOW_TRACKING_URI", None)
        log = open(home / "gateway.log", "wb")
        proc = subprocess.Popen([str(Path(sys.executable).with_name("tunegate")), "gateway", "--port", str(port),
                                 "--name", NAME, "--poll-seconds", "0.5"], cwd=tmp, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 600
            while time.time() < deadline:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            with httpx.Client(timeout=300) as http:
                def send(i: int) -> httpx.Response:
                    r = http.post(f"{url}/v1/completions", json={"model": NAME, "prompt": PROMPTS[i % len(PROMPTS)],
                                                                 "max_tokens": args.max_tokens})
                    r.raise_for_status()
                    return r

                send(0)  # warm-up
                for c in (1, 4):
                    rows[("gateway", c)] = load(send, args.requests, c)
                from tasks.registry.versions import promote

                promote(uri, NAME, "2")
                moved = time.perf_counter()
                while send(0).headers["x-tunegate-model-version"] != "2":
                    pass
                swap = time.perf_counter() - moved
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)

    print(f"\n{args.requests} requests per row, greedy, {args.max_tokens} new tokens, prompts of 5-9 words\n")
    print("| path | concurrency | requests/s | p50 s | p95 s | throughput vs bare |")
    print("|---|---:|---:|---:|---:|---:|")
    for (path, c), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0] != "bare")):
        ratio = r["rps"] / rows[("bare", c)]["rps"]
        print(f"| {path} | {c} | {r['rps']:.2f} | {r['p50']:.3f} | {r['p95']:.3f} | {ratio:.2f}x |")
    print(f"\nhot-swap: @champion v1 -> v2, first answer from v2 after {swap:.2f} s (polling every 0.5 s; v2 was "
          f"preloaded as @challenger); adapter load (download + attach) {', '.join(f'v{n} {s:.2f} s' for n, s in sorted(loads.items()))}")


if __name__ == "__main__":
    main()
