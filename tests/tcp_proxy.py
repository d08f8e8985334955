"""A TCP proxy between the server under test and PostgreSQL or Redis, for fault tests that need no timing luck.

PostgreSQL ends a session by sending an ErrorResponse (FATAL, e.g. 57P01 after ``pg_terminate_backend``) and
then closing the socket; a client that looks at the connection in between sees a session that is over but a
socket that is still open. The proxy can widen that moment at will (``hold_closes``: forward what PostgreSQL
sends, keep the close back until the client writes again) and can cut every connection without a word
(``cut``), as a crash or a network failure does. It can also keep back what clients send (``hold_requests``)
until ``release_requests``: a slow network in one direction, to stop a client's next command in flight.

New connections can be kept from PostgreSQL too: refused after the client's first message (``refusing``: a
proxy or PgBouncer whose server is failing over, closing each connection it accepts, or answering with an
error), or left unanswered (``stall_connections`` until ``release_connections``: an address that drops
packets, where a client's connection attempt waits until it times out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote, urlsplit

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_CHUNK = 65536


def postgres_opener(url: str) -> Callable[[], Awaitable[Streams]]:
    """Opens a connection to the server of a PostgreSQL URL: its Unix socket (``?host=/dir``) or host:port."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    if host.startswith("/"):
        path = f"{host}/.s.PGSQL.{port}"
        return lambda: asyncio.open_unix_connection(path)
    return lambda: asyncio.open_connection(host, port)


def tcp_opener(host: str, port: int) -> Callable[[], Awaitable[Streams]]:
    return lambda: asyncio.open_connection(host, port)


class _Link:
    """One client connection and its connection to PostgreSQL."""

    __slots__ = ("client", "server", "server_gone")

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.server_gone = False

    def abort(self) -> None:
        self.client.transport.abort()
        self.server.transport.abort()


class TcpProxy:
    """Listens on 127.0.0.1 and forwards each connection to PostgreSQL, byte for byte."""

    def __init__(self, open_server: Callable[[], Awaitable[Streams]]) -> None:
        self._open_server = open_server
        self._listener: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self.hold_closes = False
        self.held = 0  # closes PostgreSQL sent that the proxy kept back, so far
        self.requests_held = 0  # bytes clients sent that the proxy keeps back until release_requests()
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self.refusing: bytes | None = None
        """While set, each new connection is answered with these bytes (b"": nothing) after the client's first
        message, then closed, never reaching PostgreSQL."""
        self.refused = 0  # connections refused so far
        self._connecting = asyncio.Event()
        self._connecting.set()
        self.stalled = 0  # connections kept from PostgreSQL by stall_connections(), so far
        self._stalled: set[asyncio.StreamWriter] = set()
        self._closed = False
        self.port = 0

    async def start(self) -> int:
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self.port

    def url(self, database_url: str) -> str:
        """``database_url`` (TCP or Unix socket) rewritten to reach the same database through this proxy."""
        parts = urlsplit(database_url)
        auth = quote(parts.username or "postgres", safe="")
        if parts.password:
            auth += ":" + quote(parts.password, safe="")
        return f"postgresql://{auth}@127.0.0.1:{self.port}{parts.path}?sslmode=disable"

    def hold_requests(self) -> None:
        """From now on, keeps back what clients send (their connections stay open)."""
        self._forwarding.clear()

    def release_requests(self) -> None:
        """Forwards what was kept back, in order, and everything after it."""
        self._forwarding.set()
        self.requests_held = 0

    def stall_connections(self) -> None:
        """From now on, accepts new connections but sends nothing on, and answers nothing, until
        release_connections(): to the client, PostgreSQL does not answer its connection attempt."""
        self._connecting.clear()

    def release_connections(self) -> None:
        """Connects the stalled connections to PostgreSQL, forwarding what their clients sent, and the next ones."""
        self._connecting.set()

    def cut(self) -> None:
        """Closes every connection at once, both ways, with nothing sent first."""
        for link in list(self._links):
            link.abort()
        for client in list(self._stalled):
            client.transport.abort()

    async def wait_held(self, count: int, within: float = 10.0) -> None:
        """Waits until ``count`` closes are held back; fails after ``within`` seconds."""
        give_up = time.monotonic() + within
        while self.held < count:
            assert time.monotonic() < give_up, f"{self.held} closes held back, expected {count}"
            await asyncio.sleep(0.01)

    async def wait_stalled(self, count: int, within: float = 10.0) -> None:
        """Waits until ``count`` connections have been stalled; fails after ``within`` seconds."""
        give_up = time.monotonic() + within
        while self.stalled < count:
            assert time.monotonic() < give_up, f"{self.stalled} connections stalled, expected {count}"
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._closed = True
        self._connecting.set()  # the stalled connections end, unforwarded
        if self._listener is not None:
            self._listener.close()
        self.cut()
        if self._listener is not None:
            await self._listener.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        if self.refusing is not None:
            await self._refuse(client_reader, client, self.refusing)
            return
        if not self._connecting.is_set():
            self.stalled += 1
            self._stalled.add(client)
            try:
                await self._connecting.wait()
            finally:
                self._stalled.discard(client)
            if self._closed or client.is_closing():
                client.transport.abort()
                return
        try:
            server_reader, server = await self._open_server()
        except OSError:
            client.transport.abort()
            return
        link = _Link(client, server)
        self._links.add(link)
        pumps = [
            asyncio.create_task(self._to_server(client_reader, link)),
            asyncio.create_task(self._to_client(server_reader, link)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            client.close()  # what was written is still delivered; after ``cut`` this is a no-op
            server.close()

    async def _refuse(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter, answer: bytes) -> None:
        """Reads the client's first message (SSLRequest or StartupMessage: a length, then the rest), so that the
        close is an orderly one the client reads as such, not a reset; answers ``answer``; closes."""
        self.refused += 1
        try:
            length = int.from_bytes(await reader.readexactly(4), "big")
            await reader.readexactly(length - 4)
            client.write(answer)
            await client.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        client.close()

    async def _to_server(self, reader: asyncio.StreamReader, link: _Link) -> None:
        """Ends when the client closes, or writes to a session PostgreSQL has ended (the held close reaches it)."""
        while (data := await reader.read(_CHUNK)) and not link.server_gone:
            if not self._forwarding.is_set():
                self.requests_held += len(data)
                await self._forwarding.wait()
            link.server.write(data)
            await link.server.drain()

    async def _to_client(self, reader: asyncio.StreamReader, link: _Link) -> None:
        """Ends when PostgreSQL closes, unless closes are held back: then the client keeps its end open."""
        while data := await reader.read(_CHUNK):
            link.client.write(data)
            await link.client.drain()
        if self.hold_closes:
            link.server_gone = True
            self.held += 1
            await asyncio.Event().wait()
