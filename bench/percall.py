"""What each layer of a GetUser adds per call, measured in-process: ``python -m bench.percall``.

h2load measures the whole call; this splits the service's own share into its pieces (the per-call rules,
validation, cache lookup, the database call, proto conversion), each as CPU microseconds per call with
four concurrent callers, as in the load test. Run it beside ``make bench``, whose echo shows what the
bare gRPC call costs on the same machine. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from dataservice.v1 import user_service_pb2 as pb
from prometheus_client import CollectorRegistry

from server.api.users import UserServicer
from server.api.validation import Violations
from server.cache import keys
from server.cache.base import NoCache
from server.cache.users import Users
from server.config import Settings
from server.db import migrate
from server.db.database import Database
from server.db.embedded import start_embedded_postgres
from server.db.pool import create_pool
from server.interceptors import RpcPolicy
from server.messages.users import user_message
from server.metrics import RpcMetrics
from server.outage import OutageLog

REPO = Path(__file__).resolve().parent.parent
WORKERS = 4


class _CallContext:
    """Just what the per-call rules read of a grpc.aio ServicerContext: no deadline, no metadata."""

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()


async def _cpu_us_per_call(body: Callable[[], Awaitable[Any]], calls: int) -> float:
    async def worker() -> None:
        for _ in range(calls // WORKERS):
            await body()

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return (time.process_time() - started) / calls * 1e6


async def _measure(database_url: str | None, calls: int, rounds: int) -> dict[str, Any]:
    dsn = database_url or await asyncio.to_thread(start_embedded_postgres, REPO / ".data" / "postgres")
    settings = Settings.from_env({"DATABASE_URL": dsn})
    await migrate.Migrator(dsn, migrate.load_migrations(REPO / "migrations")).up()
    pool = await create_pool(dsn, settings)
    db = Database(pool, settings.db_command_timeout_seconds)
    users = Users(db, NoCache(), ttl_seconds=60)
    email = f"percall-{uuid.uuid4().hex[:8]}@example.com"
    user = (await users.create(email=email, display_name="P", preferences={}, password_hash="x", request=None)).user
    request = pb.GetUserRequest(id=str(user.id))
    context: Any = _CallContext()
    # GetUser checks no password and reads no page token
    servicer = UserServicer(users, passwords=None, page_tokens=None, login_limiter=None)  # type: ignore[arg-type]
    policy = RpcPolicy(RpcMetrics(CollectorRegistry()), 10.0, OutageLog(logging.getLogger("bench"), "database"))
    wrapped_get_user = policy.wrap("/dataservice.v1.UserService/GetUser", servicer.GetUser)
    query = "SELECT id, email, display_name, preferences, created_at, updated_at, version FROM users WHERE id = $1"

    async def trivial(request: Any, context: Any) -> None:
        return None

    wrapped_trivial = policy.wrap("/bench.Trivial/Call", trivial)

    async def validation() -> None:
        check = Violations()
        check.uuid("id", request.id)
        check.raise_if_any()

    async def conversion() -> None:
        pb.GetUserResponse(user=user_message(user)).SerializeToString()

    async def cache_lookup() -> None:
        await NoCache().get_or_lease(keys.user(user.id))

    pieces: dict[str, Callable[[], Awaitable[Any]]] = {
        "rpc_rules_wrapper": lambda: wrapped_trivial(request, context),
        "unwrapped_trivial_handler": lambda: trivial(request, context),
        "validation": validation,
        "cache_lookup_none": cache_lookup,
        "conversion_and_serialize": conversion,
        "asyncpg_pool_fetchrow": lambda: pool.fetchrow(query, user.id),
        "database_fetchrow": lambda: db.fetchrow(query, user.id),
        "servicer_getuser_unwrapped": lambda: servicer.GetUser(request, context),
        "servicer_getuser_with_rules": lambda: wrapped_get_user(request, context),
    }
    samples: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(rounds):  # interleaved, so that noise hits every piece alike
        for name, body in pieces.items():
            samples[name].append(await _cpu_us_per_call(body, calls))
    await users.delete(user.id, expected_version=None)
    await pool.close()
    medians = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    return {
        "benchmark": "percall",
        "parameters": {"calls": calls, "rounds": rounds, "workers": WORKERS, "database": "url" if database_url else "embedded"},
        "cpu_us_per_call": medians,
        "derived_us_per_call": {
            "rpc_rules": round(medians["rpc_rules_wrapper"] - medians["unwrapped_trivial_handler"], 1),
            "database_wrapper_over_asyncpg": round(medians["database_fetchrow"] - medians["asyncpg_pool_fetchrow"], 1),
            "servicer_over_its_query": round(medians["servicer_getuser_unwrapped"] - medians["database_fetchrow"], 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.percall", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--calls", type=int, default=8000, help="calls per piece and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(uvloop.run(_measure(args.database_url, args.calls, args.rounds)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
