"""What each layer of a GetUser and of a BatchGetContents adds, measured in-process: ``python -m bench.percall``.

h2load measures the whole call; this splits the service's own share into its pieces (the per-call rules,
validation, cache lookup, the database call, proto conversion), each as CPU microseconds per call with
four concurrent callers, as in the load test. For BatchGetContents of 100 seeded content rows (bodies of a
few KB, as ``make bench`` seeds them) it also gives each piece per item, to show what a batch spends per
item: the query, rows into Content objects, Content objects into messages, serialization. Run it beside
``make bench``, whose echo shows what the bare gRPC call costs on the same machine. Prints one JSON object.
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

import asyncpg
import uvloop
from dataservice.v1 import content_service_pb2 as content_pb
from dataservice.v1 import user_service_pb2 as pb
from prometheus_client import CollectorRegistry

from bench.seed_contents import copy_contents
from bench.servers import database_dsn, embedded_pgdata
from server.api.content import ContentServicer
from server.api.users import UserServicer
from server.api.validation import Violations
from server.cache import keys
from server.cache.base import NoCache
from server.cache.content import Contents
from server.cache.metrics import CacheMetrics
from server.cache.readthrough import ReadThrough
from server.cache.users import Users
from server.config import Settings
from server.db import migrate
from server.db.database import Database
from server.db.pool import create_pool
from server.interceptors import RpcPolicy
from server.messages.content import fill_content
from server.messages.users import user_message
from server.metrics import QueryMetrics, RpcMetrics
from server.outage import OutageLog
from server.store import content as content_store

REPO = Path(__file__).resolve().parent.parent
WORKERS = 4
BATCH = 100
Pieces = dict[str, Callable[[], Awaitable[Any]]]


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


async def _medians(pieces: Pieces, calls: int, rounds: int) -> dict[str, float]:
    """CPU µs per call of each piece, median over rounds run interleaved so that noise hits every piece alike."""
    samples: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(rounds):
        for name, body in pieces.items():
            samples[name].append(await _cpu_us_per_call(body, calls))
    return {name: round(statistics.median(values), 1) for name, values in samples.items()}


async def _batch_pieces(dsn: str, pool: asyncpg.Pool, db: Database, author_id: uuid.UUID) -> Pieces:
    """The pieces of one BatchGetContents of BATCH rows written by author_id (deleted with the author)."""
    conn = await asyncpg.connect(dsn)  # no jsonb codec: COPY takes the metadata as JSON text
    try:
        await copy_contents(conn, [author_id], BATCH, seed=0)
    finally:
        await conn.close()
    ids = [row["id"] for row in await pool.fetch("SELECT id FROM contents WHERE author_id = $1", author_id)]
    found = await content_store.get_contents(db, ids)
    contents = [found[content_id] for content_id in ids]
    request = content_pb.BatchGetContentsRequest(ids=[str(content_id) for content_id in ids])
    context: Any = _CallContext()
    # BatchGetContents reads no page token and searches no vectors
    servicer = ContentServicer(
        Contents(db, _uncached()), page_tokens=None, embeddings=None, vector_search=None  # type: ignore[arg-type]
    )
    query = (
        "SELECT id, author_id, title, body, tags, metadata, status, created_at, updated_at, published_at, version "
        "FROM contents WHERE id = ANY($1::uuid[])"
    )

    def filled() -> content_pb.BatchGetContentsResponse:
        response = content_pb.BatchGetContentsResponse()
        for content in contents:
            fill_content(response.contents.add(), content)
        return response

    response = filled()

    async def to_messages() -> None:
        filled()

    async def serialize() -> None:
        response.SerializeToString()

    return {
        "asyncpg_pool_fetch": lambda: pool.fetch(query, ids),
        "database_fetch": lambda: db.fetch(query, ids, idempotent=True),
        "store_get_contents": lambda: content_store.get_contents(db, ids),
        "fill_content_messages": to_messages,
        "serialize_response": serialize,
        "servicer_batchgetcontents_unwrapped": lambda: servicer.BatchGetContents(request, context),
    }


def _uncached() -> ReadThrough:
    """The read-through the service builds, over no cache: every read goes to the database, as it is measured."""
    return ReadThrough(NoCache(), CacheMetrics(CollectorRegistry()), ttl_seconds=60, negative_ttl_seconds=5)


async def _measure(database_url: str | None, calls: int, batch_calls: int, rounds: int) -> dict[str, Any]:
    dsn = await database_dsn(database_url, embedded_pgdata(database_url, {}))
    settings = Settings.from_env({"DATABASE_URL": dsn})
    await migrate.Migrator(dsn, migrate.load_migrations(REPO / "migrations")).up()
    pool = await create_pool(dsn, settings)
    db = Database(
        pool,
        settings.db_command_timeout_seconds,
        QueryMetrics(CollectorRegistry(), slow_seconds=0),
        acquire_timeout_seconds=settings.db_pool_acquire_timeout_seconds,
    )
    users = Users(db, _uncached())
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
    try:
        medians = await _medians(pieces, calls, rounds)
        batch = await _medians(await _batch_pieces(dsn, pool, db, user.id), batch_calls, rounds)
    finally:
        await users.delete(user.id, expected_version=None)  # its content goes with it
        await pool.close()
    return {
        "benchmark": "percall",
        "parameters": {
            "calls": calls,
            "batch_calls": batch_calls,
            "batch_size": BATCH,
            "rounds": rounds,
            "workers": WORKERS,
            "database": "url" if database_url else "embedded",
        },
        "cpu_us_per_call": medians,
        "derived_us_per_call": {
            "rpc_rules": round(medians["rpc_rules_wrapper"] - medians["unwrapped_trivial_handler"], 1),
            "database_wrapper_over_asyncpg": round(medians["database_fetchrow"] - medians["asyncpg_pool_fetchrow"], 1),
            "servicer_over_its_query": round(medians["servicer_getuser_unwrapped"] - medians["database_fetchrow"], 1),
        },
        "batch_get_contents": {
            "cpu_us_per_call": batch,
            "cpu_us_per_item": {name: round(value / BATCH, 2) for name, value in batch.items()},
            "derived_us_per_item": {
                "rows_to_content_objects": round((batch["store_get_contents"] - batch["database_fetch"]) / BATCH, 2),
                "servicer_over_its_store_read": round(
                    (batch["servicer_batchgetcontents_unwrapped"] - batch["store_get_contents"]) / BATCH, 2
                ),
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.percall", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--calls", type=int, default=8000, help="calls per piece and round")
    parser.add_argument(
        "--batch-calls", type=int, default=400, help=f"calls per BatchGetContents piece and round ({BATCH} items each)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(uvloop.run(_measure(args.database_url, args.calls, args.batch_calls, args.rounds)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
