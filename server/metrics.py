"""Prometheus metrics of the service, in a registry of its own (no module-level global state).

RPC metrics follow go-grpc-prometheus naming, so existing dashboards and the benchmark's count check
read them unchanged: ``grpc_server_handled_total`` by service, method and code, and the
``grpc_server_handling_seconds`` histogram.
"""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RpcMetrics:
    """Counts and times RPCs. Label children are cached: ``labels()`` is too slow for every call."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            registry=registry,
        )
        self._latency = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC's handler to its answer.",
            ["grpc_type", "grpc_service", "grpc_method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, grpc.StatusCode], tuple[Counter, Histogram]] = {}

    def observe(self, full_method: str, code: grpc.StatusCode, seconds: float) -> None:
        key = (full_method, code)
        children = self._children.get(key)
        if children is None:
            service, _, method = full_method.lstrip("/").rpartition("/")
            children = (
                self._handled.labels("unary", service, method, code.name),
                self._latency.labels("unary", service, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class MetricsEndpoint:
    """``/metrics`` on ``port``, served from a thread by prometheus-client's own HTTP server, until ``close()``."""

    def __init__(self, registry: CollectorRegistry, port: int) -> None:
        self._server, self._thread = start_http_server(port, registry=registry)

    def close(self) -> None:
        self._server.shutdown()  # blocks until serve_forever returns: at most one poll interval (0.5 s)
        self._server.server_close()
