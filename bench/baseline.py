"""What the two baseline servers (the echo and the reference GetUser) share.

Each is one generic grpc.aio handler on uvloop, started by the runner as its own
process with ``--address`` and ``--metrics-port``. Each counts its OK answers under
the service's metric name and labels (``grpc_server_handled_total``, go-grpc-prometheus
naming), so the runner checks h2load's ``succeeded`` against the server's own count
the same way for every path, and reads it with the same scrape (``bench/metrics.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

import grpc
import prometheus_client

from bench.metrics import HANDLED, split_method


def ok_counter(metrics_port: int | None, method_path: str) -> prometheus_client.Counter:
    """The one OK series of method_path, served on metrics_port (when set) and bound once, so
    an answer costs a single locked increment."""
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter(
        HANDLED,
        "Total number of RPCs completed on the server, regardless of success or failure.",
        ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        registry=registry,
    )
    if metrics_port is not None:
        prometheus_client.start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    service, method = split_method(method_path)
    return counter.labels(grpc_type="unary", grpc_service=service, grpc_method=method, grpc_code="OK")


async def serve_until_signalled(address: str, handler: grpc.GenericRpcHandler) -> None:
    """Serve handler on address until SIGTERM or SIGINT, then stop with a short grace."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot bind {address}")
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def parse_args(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """``--address`` and ``--metrics-port``, the two flags the runner passes to a baseline server."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--address", required=True, help="host:port to serve gRPC on")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="Prometheus HTTP port (off when unset)"
    )
    return parser.parse_args(argv)
