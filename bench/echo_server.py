"""A bare grpc.aio unary echo: the ceiling every measured path is compared with.

It runs on the same grpcio and the same event loop (uvloop) as the service, so the
difference between it and a real method is what the service adds per call. Like the
reference server it counts its OK answers under the service's metric name (see
``bench/baseline.py``).

Run: ``python -m bench.echo_server --address 127.0.0.1:PORT --metrics-port PORT``.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import uvloop

from bench import baseline

SERVICE = "bench.Echo"
METHOD = "Echo"
PATH = f"/{SERVICE}/{METHOD}"


async def serve(address: str, metrics_port: int | None) -> None:
    """Serve the echo until SIGTERM or SIGINT."""
    ok = baseline.ok_counter(metrics_port, PATH)

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ok.inc()
        return request

    # No (de)serializers: the handler sees and returns raw bytes, so no proto is needed.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(echo)}
    )
    await baseline.serve_until_signalled(address, handler)


def main(argv: Sequence[str] | None = None) -> None:
    args = baseline.parse_args(__doc__.split("\n\n")[0], argv)
    uvloop.run(serve(args.address, args.metrics_port))


if __name__ == "__main__":
    main()
