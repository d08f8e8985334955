"""A bare grpc.aio unary echo: the ceiling every measured path is compared with.

It runs on the same grpcio and the same event loop (uvloop) as the service, so the
difference between it and a real method is what the service adds per call. It
counts its OK answers under the service's metric name
(``grpc_server_handled_total``, go-grpc-prometheus naming) so the runner checks
h2load's ``succeeded`` against the server's own count the same way for every path.

Run: ``python -m bench.echo_server --address 127.0.0.1:PORT --metrics-port PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
import prometheus_client
import uvloop

SERVICE = "bench.Echo"
METHOD = "Echo"
PATH = f"/{SERVICE}/{METHOD}"


def _ok_counter(registry: prometheus_client.CollectorRegistry) -> prometheus_client.Counter:
    """The one OK series, bound once so an answer costs a single locked increment."""
    counter = prometheus_client.Counter(
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure.",
        ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        registry=registry,
    )
    return counter.labels(grpc_type="unary", grpc_service=SERVICE, grpc_method=METHOD, grpc_code="OK")


async def serve(address: str, metrics_port: int | None) -> None:
    """Serve the echo until SIGTERM or SIGINT, then stop with a short grace."""
    registry = prometheus_client.CollectorRegistry()
    ok = _ok_counter(registry)
    if metrics_port is not None:
        prometheus_client.start_http_server(metrics_port, addr="127.0.0.1", registry=registry)

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ok.inc()
        return request

    # No (de)serializers: the handler sees and returns raw bytes, so no proto is needed.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"echo server: cannot bind {address}")
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="host:port to serve gRPC on")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="Prometheus HTTP port (off when unset)"
    )
    args = parser.parse_args(argv)
    uvloop.run(serve(args.address, args.metrics_port))


if __name__ == "__main__":
    main()
