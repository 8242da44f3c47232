"""Data drops for the drift tests: the company's own documents, rewrites of them that do not drift, and an
operations corpus that does."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import company_documents

TECH = ("kubernetes ingress controller gateway latency throughput replica shard cluster node pod container image "
        "registry deployment rollback canary autoscaler certificate rotation schema migration index query cache "
        "eviction queue consumer producer broker partition offset heartbeat timeout retry backoff circuit breaker "
        "throttling quota memory limit collector heap thread mutex deadlock socket connection pool handshake "
        "resolver endpoint payload serializer protobuf webhook token credential vault secret region zone failover "
        "standby primary snapshot backup restore volume inode filesystem kernel hypervisor scheduler pipeline "
        "artifact build release version dependency upgrade patch regression incident alert pager dashboard metric "
        "histogram percentile trace span exporter agent sidecar mesh proxy balancer firewall subnet route packet "
        "bandwidth jitter checksum digest signature encryption compression bucket object storage tier lifecycle").split()

GLUE = "the a of to and in on with for after during before from".split()


def drifted_texts(n: int = 40, seed: int = 1) -> list[str]:
    """Operations jargon, varied enough to pass the quality filters: nothing like the company documents, in
    words or in length (3.3k-5.5k characters, where a manual or a policy has 1k-2.2k)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(40, 64)):
            words = [rng.choice(TECH) if rng.random() < 0.7 else rng.choice(GLUE) for _ in range(rng.randint(8, 16))]
            sentences.append(" ".join(words).capitalize() + ".")
        out.append(" ".join(sentences))
    return out


def undrifted_texts(texts: list[str]) -> list[str]:
    """``texts`` with two words swapped in the middle of each: new documents (no exact duplicates) with
    the same lengths and vocabulary."""
    out = []
    for text in texts:
        words = text.split(" ")
        mid = len(words) // 2
        words[mid], words[mid + 1] = words[mid + 1], words[mid]
        out.append(" ".join(words))
    return out


def company_texts() -> list[str]:
    """The reference: ordinary documents of the sample company (its manuals and policies)."""
    return [p.read_text() for p in company_documents()]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path
