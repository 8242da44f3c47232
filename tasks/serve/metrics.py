"""The gateway's Prometheus metrics, in a registry of their own (``/metrics`` serves exactly these):
requests, errors, latency and time to first token by version and strategy, tokens generated, guardrail hits,
alias moves followed and the version each alias points to."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# seconds: a short completion on a small model is tens of milliseconds on a GPU, seconds on 2 CPU cores
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tunegate_gateway_requests", "requests answered, by version, endpoint and status",
                                ["version", "endpoint", "strategy", "status"], registry=r)
        self.errors = Counter("tunegate_gateway_errors", "requests that failed or were refused, by reason",
                              ["endpoint", "reason"], registry=r)
        self.latency = Histogram("tunegate_gateway_request_seconds", "time to the whole answer",
                                 ["version", "endpoint", "strategy"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("tunegate_gateway_time_to_first_token_seconds", "time to the first streamed text",
                                     ["version", "strategy"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("tunegate_gateway_generated_tokens", "tokens generated", ["version"], registry=r)
        self.guardrail_hits = Counter("tunegate_gateway_guardrail_hits", "requests refused by a guardrail",
                                      ["guardrail"], registry=r)
        self.alias_moves = Counter("tunegate_gateway_alias_moves", "alias moves followed", ["alias"], registry=r)
        self.alias_version = Gauge("tunegate_gateway_alias_version", "the version each alias points to",
                                   ["alias"], registry=r)

    def alias_changed(self, alias: str, old: str | None, new: str | None, moved: bool) -> None:
        if moved:
            self.alias_moves.labels(alias).inc()
        self.alias_version.labels(alias).set(float(new) if new else 0)
