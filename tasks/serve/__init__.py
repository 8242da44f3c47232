"""Serving the registered model: the gateway's versions (the registry's @champion and @challenger, one base
in memory with each version's LoRA adapter on it), OpenAI-compatible requests and answers, guardrails and
Prometheus metrics. The HTTP app is tasks/serve/app.py; `tunegate gateway` starts it."""
