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

import logging
import platform
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from importlib import metadata

import asyncpg
import grpc
from prometheus_client import CollectorRegistry, Info, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("server.db")

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


class QueryMetrics:
    """Statements by name — the store function that ran them — with their durations, and a log line for each
    one slower than ``slow_seconds`` (its name and duration, never its parameters; 0 turns the log off)."""

    def __init__(self, registry: CollectorRegistry, slow_seconds: float) -> None:
        self._durations = Timings(
            "dataservice_db_statement_duration_seconds",
            "Time of each database call from the wait for a connection to its answer, by store function; "
            "_count is the number of calls.",
            ["statement"],
            _LATENCY_BUCKETS,
            registry,
        )
        self._series: dict[str, list[float]] = {}
        self._slow_seconds = slow_seconds
        self.in_flight = 0
        """Database calls started and not yet answered (read by PoolMetrics)."""
        self.pool_exhausted = 0
        """Database calls refused because no pooled connection came free in time (read by PoolMetrics)."""

    def observe(self, statement: str, seconds: float) -> None:
        series = self._series.get(statement)
        if series is None:
            series = self._series[statement] = self._durations.series((statement,))
        self._durations.observe(series, seconds)
        if self._slow_seconds and seconds >= self._slow_seconds:
            log.warning("slow statement", extra={"statement": statement, "duration_ms": round(seconds * 1000, 1)})


class PoolMetrics(Collector):
    """The connection pool's state when scraped: its size, idle and in-use connections, the limit, the share in
    use, the calls waiting for a connection (calls in flight beyond the connections in use), and the count of
    calls refused after waiting DB_POOL_ACQUIRE_TIMEOUT_SECONDS for one."""

    def __init__(self, registry: CollectorRegistry, pool: asyncpg.Pool, queries: QueryMetrics) -> None:
        self._pool = pool
        self._queries = queries
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        size, idle, limit = self._pool.get_size(), self._pool.get_idle_size(), self._pool.get_max_size()
        in_use = size - idle
        for name, documentation, value in (
            ("dataservice_db_pool_connections", "Connections the pool holds open.", size),
            ("dataservice_db_pool_idle_connections", "Open connections not in use.", idle),
            ("dataservice_db_pool_in_use_connections", "Connections lent out.", in_use),
            ("dataservice_db_pool_max_connections", "The pool's limit (DB_POOL_MAX_SIZE).", limit),
            ("dataservice_db_pool_utilization", "Connections in use over the limit, 0 to 1.", in_use / limit),
            (
                "dataservice_db_pool_waiting_calls",
                "Database calls waiting for a connection.",
                max(0, self._queries.in_flight - in_use),
            ),
        ):
            yield GaugeMetricFamily(name, documentation, value=value)
        yield CounterMetricFamily(
            "dataservice_db_pool_exhausted",
            "Database calls answered RESOURCE_EXHAUSTED because every pooled connection stayed busy.",
            value=self._queries.pool_exhausted,
        )


def register_build_info(registry: CollectorRegistry) -> None:
    """``dataservice_build_info``: the versions this process runs, as labels of a constant 1."""
    versions = {"python": platform.python_version()}
    for package in ("dataservice-server", "grpcio", "asyncpg", "redis", "protobuf"):
        try:
            versions[package.replace("-", "_")] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package.replace("-", "_")] = "unknown"
    Info("dataservice_build", "Versions of the service and of what it runs on.", registry=registry).info(versions)


class MetricsEndpoint:
    """``/metrics`` on ``host:port``, served from a thread by prometheus-client's own HTTP server, until
    ``close()``. Port 0 takes a free one: ``port`` says which."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port: int = self._server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()  # blocks until serve_forever returns: at most one poll interval (0.5 s)
        self._server.server_close()
