"""Creation of the asyncpg pool, with the per-connection setup the stores rely on.

The pool is created without connecting (asyncpg's ``min_size`` is 0: connections open on demand and close
after five idle minutes), so the server starts while PostgreSQL is down and serves as soon as it is back;
``warm_up`` opens DB_POOL_MIN_SIZE connections at start when PostgreSQL is already reachable.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

import asyncpg

from server.config import Settings

APPLICATION_NAME = "dataservice"


_VECTOR_HEADER = struct.Struct(">HH")  # pgvector's binary form: dimension, an unused word, then float4s


def encode_vector(values: Sequence[float]) -> bytes:
    """A sequence of floats in pgvector's binary form. One struct call: asyncpg's own real[] encoder checks
    every element against collections.abc, which costs a search of 384 floats more than its statement."""
    return _VECTOR_HEADER.pack(len(values), 0) + struct.pack(f">{len(values)}f", *values)


def decode_vector(data: bytes) -> list[float]:
    dimension, _ = _VECTOR_HEADER.unpack_from(data)
    return list(struct.unpack_from(f">{dimension}f", data, _VECTOR_HEADER.size))


async def _init_connection(conn: asyncpg.Connection) -> None:
    """Runs once per new connection: JSON columns arrive as Python objects, and, where pgvector is installed,
    ``vector`` values travel in its binary form (connections opened before it was installed are replaced
    when the health monitor sees it arrive)."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    schema = await conn.fetchval(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"
    )
    if schema is not None:
        await conn.set_type_codec(
            "vector", schema=schema, encoder=encode_vector, decoder=decode_vector, format="binary"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset query (RESET ALL, UNLISTEN, advisory unlock…) with nothing.

    The default costs a round trip and ~50 % more PostgreSQL CPU per query (see ../shared/DESIGN.md).
    It is safe because no pooled connection keeps session state: settings are ``SET LOCAL`` inside a
    transaction, advisory locks are transaction-level, and session-scoped work (the migration runner)
    uses a dedicated connection. asyncpg still rolls back a transaction left open before this is called.
    """


async def create_pool(dsn: str, settings: Settings) -> asyncpg.Pool:
    """Returns a pool for ``dsn`` sized and timed by ``settings``; it connects on first use."""
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=settings.db_pool_max_size,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        reset=_keep_session,
        timeout=settings.db_connect_timeout_seconds,
        command_timeout=settings.db_command_timeout_seconds,
        statement_cache_size=settings.db_statement_cache_size,
        server_settings={"application_name": APPLICATION_NAME},
    )


async def warm_up(pool: asyncpg.Pool, connections: int, timeout: float) -> None:
    """Opens ``connections`` pooled connections at once so the first RPCs do not pay for connecting."""
    held = []
    try:
        for _ in range(min(connections, pool.get_max_size())):
            held.append(await pool.acquire(timeout=timeout))
    finally:
        for conn in held:
            await pool.release(conn)
