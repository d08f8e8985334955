"""Prometheus metrics of the service, in a registry of its own (no module-level global state).

RPC metrics follow go-grpc-prometheus naming, so existing dashboards and the benchmark's count check
read them unchanged: ``grpc_server_handled_total`` by service, method and code, and the
``grpc_server_handling_seconds`` histogram.

Counts on the per-call path are plain integers in dictionaries, turned into metric families only when
``/metrics`` is scraped (``Counts``, ``Timings``): prometheus-client's own Counter and Histogram take a lock
and walk their buckets in Python on every update, which cost a cached read a fifth of its own time. Updates
happen on the event loop's thread; a scrape from the endpoint's thread reads a snapshot of each dictionary.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

import grpc
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Counts(Collector):
    """A counter family with labels, counted as ``counts[labels] += 1`` and exposed when scraped."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = list(labels)
        self.counts: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, value in list(self.counts.items()):
            family.add_metric(labels, value)
        yield family


class Timings(Collector):
    """A histogram family with labels: per label set, one count per bucket (the last is +Inf) and the sum."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = list(labels)
        self._bounds = tuple(buckets)
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts, then the sum
        registry.register(self)

    def series(self, labels: tuple[str, ...]) -> list[float]:
        """The mutable counts of one label set, for ``observe``; made on first use."""
        found = self._series.get(labels)
        if found is None:
            found = self._series[labels] = [0.0] * (len(self._bounds) + 2)
        return found

    def observe(self, series: list[float], seconds: float) -> None:
        series[bisect_left(self._bounds, seconds)] += 1  # le is inclusive: a value on a bound is in its bucket
        series[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, series in list(self._series.items()):
            counts, total = series[:-1], series[-1]
            cumulative, running = [], 0.0
            for bound, count in zip([*map(str, self._bounds), "+Inf"], counts, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric(list(labels), cumulative, total)
        yield family


class RpcMetrics:
    """Counts and times RPCs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._handled = Counts(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            registry,
        )
        self._latency = Timings(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC's handler to its answer.",
            ["grpc_type", "grpc_service", "grpc_method"],
            _LATENCY_BUCKETS,
            registry,
        )
        self._labels: dict[tuple[str, grpc.StatusCode], tuple[tuple[str, ...], list[float]]] = {}

    def observe(self, full_method: str, code: grpc.StatusCode, seconds: float) -> None:
        key = (full_method, code)
        labels = self._labels.get(key)
        if labels is None:
            service, _, method = full_method.lstrip("/").rpartition("/")
            labels = self._labels[key] = (
                ("unary", service, method, code.name),
                self._latency.series(("unary", service, method)),
            )
        counts = self._handled.counts
        counts[labels[0]] = counts.get(labels[0], 0) + 1
        self._latency.observe(labels[1], seconds)


class MetricsEndpoint:
    """``/metrics`` on ``port``, served from a thread by prometheus-client's own HTTP server, until ``close()``."""

    def __init__(self, registry: CollectorRegistry, port: int) -> None:
        self._server, self._thread = start_http_server(port, registry=registry)

    def close(self) -> None:
        self._server.shutdown()  # blocks until serve_forever returns: at most one poll interval (0.5 s)
        self._server.server_close()
