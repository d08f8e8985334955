"""Creation of the asyncpg pool, with the per-connection setup the stores rely on.

The pool is created without connecting (asyncpg's ``min_size`` is 0: connections open on demand and close
after DB_POOL_MAX_IDLE_SECONDS idle), so the server starts while PostgreSQL is down and serves as soon as it is
back; ``warm_up`` opens DB_POOL_MIN_SIZE connections at start when PostgreSQL is already reachable.

The setup of a new connection leaves nothing in its PostgreSQL session (keepalive and codecs live in the
client), so the same pool works through PgBouncer in transaction pooling mode, where a connection's statements
run on whichever server connection is free (DB_PGBOUNCER turns the statement cache off).
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from server.config import Settings

# A peer that stays silent this many probes after the idle time is declared dead (the connection then fails).
_KEEPALIVE_PROBES = 4

_VECTOR_HEADER = struct.Struct(">HH")  # pgvector's binary form: dimension, an unused word, then float4s


def encode_vector(values: Sequence[float]) -> bytes:
    """A sequence of floats in pgvector's binary form. One struct call: asyncpg's own real[] encoder checks
    every element against collections.abc, which costs a search of 384 floats more than its statement."""
    return _VECTOR_HEADER.pack(len(values), 0) + struct.pack(f">{len(values)}f", *values)


def decode_vector(data: bytes) -> list[float]:
    dimension, _ = _VECTOR_HEADER.unpack_from(data)
    return list(struct.unpack_from(f">{dimension}f", data, _VECTOR_HEADER.size))


def _setup(keepalive_seconds: int) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """The setup of each new connection: TCP keepalive after ``keepalive_seconds`` idle (0: the OS default,
    usually none), then the codecs."""

    async def init(conn: asyncpg.Connection) -> None:
        if keepalive_seconds:
            _keep_alive(conn, keepalive_seconds)
        await _init_codecs(conn)

    return init


def _keep_alive(conn: asyncpg.Connection, idle_seconds: int) -> None:
    """Turns TCP keepalive on for ``conn``'s socket: after ``idle_seconds`` of silence the kernel probes the
    peer every quarter of that, and fails the connection after _KEEPALIVE_PROBES unanswered probes, so a
    PostgreSQL (or PgBouncer) that vanished without closing the connection is noticed within about twice
    ``idle_seconds`` rather than the hours of the OS default, and idle connections keep NAT and firewall
    entries alive. asyncpg has no option for it and no public way to the socket: its transport gives it,
    the way asyncpg itself reaches the socket to set TCP_NODELAY. Unix sockets have no keepalive."""
    sock = conn._transport.get_extra_info("socket")  # private: see the docstring
    if sock is None or sock.family == socket.AF_UNIX:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_seconds)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle_seconds // _KEEPALIVE_PROBES))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, _KEEPALIVE_PROBES)


async def _init_codecs(conn: asyncpg.Connection) -> None:
    """JSON columns arrive as Python objects, and, where pgvector is installed, ``vector`` values travel in
    its binary form (connections opened before it was installed are replaced when the health monitor sees it
    arrive). Codecs live in the client, so behind PgBouncer they serve whichever server connection runs a query."""
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
    transaction and advisory locks are transaction-level. asyncpg still rolls back a transaction left open
    before this is called.
    """


async def create_pool(dsn: str, settings: Settings) -> asyncpg.Pool:
    """Returns a pool for ``dsn`` sized and timed by ``settings``; it connects on first use."""
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=settings.db_pool_max_size,
        max_queries=settings.db_pool_max_queries,
        max_inactive_connection_lifetime=settings.db_pool_max_idle_seconds,
        init=_setup(settings.db_tcp_keepalive_seconds),
        reset=_keep_session,
        timeout=settings.db_connect_timeout_seconds,
        command_timeout=settings.db_command_timeout_seconds,
        statement_cache_size=settings.db_statement_cache_size,
        # PgBouncer passes application_name on to the server connection that runs each transaction.
        server_settings={"application_name": settings.db_application_name},
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
