"""Prometheus metrics of one server (its own registry, so several servers in one process, as
in tests, do not share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "slmops_requests",
            "Requests answered, by endpoint, model and HTTP status.",
            ["endpoint", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "slmops_request_duration_seconds",
            "Time from request to last byte, by endpoint and model.",
            ["endpoint", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "slmops_time_to_first_token_seconds",
            "Time from request to the first streamed token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "slmops_tokens",
            "Tokens read (prompt) and written (completion), by model.",
            ["model", "direction"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "slmops_queue_depth",
            "Requests waiting for a model.",
            ["model"],
            registry=self.registry,
        )
        self.versions = Counter(
            "slmops_model_version_requests",
            "Requests answered, by served name, the model version that answered (registry:"
            "NAME@N) and whether it was a canary request.",
            ["model", "version", "canary"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "slmops_shadow_requests",
            "Requests repeated on the shadow version, by served name, version and outcome.",
            ["model", "version", "status"],
            registry=self.registry,
        )
        self.alias_switches = Counter(
            "slmops_alias_switches",
            "Times a followed registry alias moved to another version.",
            ["alias", "from_version", "to_version"],
            registry=self.registry,
        )
        self.monitor_figure = Gauge(
            "slmops_monitor_figure",
            "Monitored figures of a stack over the monitor window (quality, refusals, latency, "
            "tokens, feedback, drift): see 'slmops monitor'.",
            ["stack", "figure"],
            registry=self.registry,
        )
        self.monitor_traces = Counter(
            "slmops_monitor_traces",
            "Traces offered to online evaluation, and what became of them.",
            ["outcome"],
            registry=self.registry,
        )
        self.alerts_firing = Gauge(
            "slmops_alerts_firing",
            "Alert rules of a stack now firing.",
            ["stack"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "slmops_requests_in_flight", "Requests being served.", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
