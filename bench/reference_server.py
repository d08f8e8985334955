"""The reference: the smallest honest GetUser on grpc.aio, uvloop and asyncpg's pool.

One generic handler for ``/dataservice.v1.UserService/GetUser`` parses GetUserRequest,
runs one ``SELECT ... FROM users WHERE id = $1`` on a pool built by the service's own
``create_pool`` (same size, same no-op reset, same jsonb codec), builds GetUserResponse
with the same fields and returns it: no validation, no interceptors, no deadline
budget, no cache, no per-call metrics beyond one OK counter. Whatever a service path
costs beyond this, per call, is the service's own doing; what this costs beyond the
echo is the price of one round trip to PostgreSQL from a grpc.aio handler.

It reads its settings as the service does, with ``Settings.from_env``: the runner gives
it the service's DSN as DATABASE_URL (for the embedded PostgreSQL, the one the runner
learns by joining the server the service started) and the service's extra environment,
so the pool settings are the same.

Run: ``DATABASE_URL=... python -m bench.reference_server --address 127.0.0.1:PORT --metrics-port PORT``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import grpc
import uvloop
from dataservice.v1 import user_service_pb2 as pb

from bench import baseline
from server.config import Settings
from server.db.pool import create_pool, warm_up
from server.messages.common import struct, timestamp

SERVICE = "dataservice.v1.UserService"
METHOD = "GetUser"
PATH = f"/{SERVICE}/{METHOD}"
QUERY = "SELECT id, email, display_name, preferences, created_at, updated_at, version FROM users WHERE id = $1"


async def serve(address: str, metrics_port: int | None) -> None:
    """Serve GetUser until SIGTERM or SIGINT; the pool is connected before the port opens."""
    settings = Settings.from_env(os.environ)
    if settings.database_url is None:
        raise SystemExit("reference server: set DATABASE_URL to the service's database")
    pool = await create_pool(settings.database_url.reveal(), settings)
    await warm_up(pool, settings.db_pool_min_size, settings.db_connect_timeout_seconds)
    ok = baseline.ok_counter(metrics_port, PATH)

    async def get_user(request: pb.GetUserRequest, context: grpc.aio.ServicerContext) -> pb.GetUserResponse:
        row = await pool.fetchrow(QUERY, request.id)  # asyncpg takes the uuid as text
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such user")
        ok.inc()
        return pb.GetUserResponse(
            user=pb.User(
                id=str(row["id"]),
                email=row["email"],
                display_name=row["display_name"],
                preferences=struct(row["preferences"]),
                create_time=timestamp(row["created_at"]),
                update_time=timestamp(row["updated_at"]),
                etag=str(row["version"]),
            )
        )

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            METHOD: grpc.unary_unary_rpc_method_handler(
                get_user,
                request_deserializer=pb.GetUserRequest.FromString,
                response_serializer=pb.GetUserResponse.SerializeToString,
            )
        },
    )
    try:
        await baseline.serve_until_signalled(address, handler)
    finally:
        await pool.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = baseline.parse_args(__doc__.split("\n\n")[0], argv)
    uvloop.run(serve(args.address, args.metrics_port))


if __name__ == "__main__":
    main()
