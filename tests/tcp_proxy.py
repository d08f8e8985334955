"""A TCP proxy between the server under test and PostgreSQL or Redis, for fault tests that need no timing luck.

PostgreSQL ends a session by sending an ErrorResponse (FATAL, e.g. 57P01 after ``pg_terminate_backend``) and
then closing the socket; a client that looks at the connection in between sees a session that is over but a
socket that is still open. The proxy can widen that moment at will (``hold_closes``: forward what PostgreSQL
sends, keep the close back until the client writes again) and can cut every connection without a word
(``cut``), as a crash or a network failure does. It can also keep back what clients send (``hold_requests``)
until ``release_requests``: a slow network in one direction, to stop a client's next command in flight.
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

    def cut(self) -> None:
        """Closes every connection at once, both ways, with nothing sent first."""
        for link in list(self._links):
            link.abort()

    async def wait_held(self, count: int, within: float = 10.0) -> None:
        """Waits until ``count`` closes are held back; fails after ``within`` seconds."""
        give_up = time.monotonic() + within
        while self.held < count:
            assert time.monotonic() < give_up, f"{self.held} closes held back, expected {count}"
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.cut()
        if self._listener is not None:
            await self._listener.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
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
