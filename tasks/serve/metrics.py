"""The gateway's Prometheus metrics, in a registry of their own (``/metrics`` serves exactly these): requests,
errors, latency and time to first token by version and strategy, tokens generated, guardrail hits and PII
scrubbed from answers, the canary's share and rollbacks, shadow divergence, the traffic store, alias moves
followed and the version each alias points to. infra/grafana/dashboards/ charts them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# seconds: a short completion on a small model is tens of milliseconds on a GPU, seconds on 2 CPU cores
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


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
        self.tokens = Counter("tunegate_gateway_generated_tokens", "tokens generated", ["version", "strategy"],
                              registry=r)
        self.guardrail_hits = Counter("tunegate_gateway_guardrail_hits", "requests refused or answers changed by a "
                                      "guardrail", ["guardrail"], registry=r)
        self.pii_scrubbed = Counter("tunegate_gateway_pii_scrubbed", "PII entities scrubbed from answers",
                                    ["version", "entity"], registry=r)
        self.alias_moves = Counter("tunegate_gateway_alias_moves", "alias moves followed", ["alias"], registry=r)
        self.alias_version = Gauge("tunegate_gateway_alias_version", "the version each alias points to",
                                   ["alias"], registry=r)
        self.rollout = Gauge("tunegate_gateway_rollout_info", "the rollout file in force (1 on its strategy)",
                             ["strategy", "digest"], registry=r)
        self.rollout_errors = Counter("tunegate_gateway_rollout_file_errors", "rollout file changes refused "
                                      "(the previous file stays in force)", registry=r)
        self.canary_share = Gauge("tunegate_gateway_canary_share", "share of traffic routed to @challenger",
                                  registry=r)
        self.canary_rollbacks = Counter("tunegate_gateway_canary_rollbacks", "canaries rolled back by a guard",
                                        ["version", "guard"], registry=r)
        self.canary_promotions = Counter("tunegate_gateway_canary_promotions", "canaries promoted to @champion",
                                         ["version"], registry=r)
        self.shadow_divergence = Histogram("tunegate_gateway_shadow_divergence", "1 - similarity of the "
                                           "challenger's shadow answer to the champion's, by metric",
                                           ["metric"], buckets=SCORE_BUCKETS, registry=r)
        self.shadow_requests = Counter("tunegate_gateway_shadow_requests", "copies of requests sent to the "
                                       "challenger, by outcome (ok, error, dropped)", ["status"], registry=r)
        self.traffic_records = Counter("tunegate_gateway_traffic_records", "records written to the traffic store, "
                                       "by kind (request, shadow, feedback) and outcome (written, dropped)",
                                       ["kind", "status"], registry=r)

    def alias_changed(self, alias: str, old: str | None, new: str | None, moved: bool) -> None:
        if moved:
            self.alias_moves.labels(alias).inc()
        self.alias_version.labels(alias).set(float(new) if new else 0)
