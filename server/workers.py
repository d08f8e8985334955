"""Multi-process serving: a supervisor and WORKERS serving processes that share the gRPC port.

One Python process serves from one core (the event loop and grpc's own work on it). With ``WORKERS`` above 1,
``python -m server`` becomes a supervisor: it starts that many ``python -m server worker`` processes, each a
whole server (its own pool, its sized share of DB_CONNECTION_BUDGET, health monitor and background passes)
bound to the same port with SO_REUSEPORT, so that the kernel spreads incoming connections over them. The
supervisor serves no calls. It:

- starts the embedded PostgreSQL once, when no database is configured, and hands its DSN to the workers;
- refuses to start when something already listens on the port (the workers' SO_REUSEPORT would share it);
- forwards SIGTERM/SIGINT to every worker (each drains and stops as a lone server does; a second signal
  cuts the drains short), kills a worker still running long after its stop should have ended, and exits 0
  once all stopped cleanly;
- restarts a worker that dies, each on its own schedule, with backoff (a worker that fails its start with
  a configuration error would only fail again: the supervisor then stops the others and exits 2);
- serves METRICS_PORT itself: a scrape collects every worker's metrics (each serves them on a loopback
  port of its own) with a ``worker`` label added, plus ``dataservice_worker_restarts_total``.

Each worker holds one end of a socket pair whose other end the supervisor keeps: the worker reports its
metrics port on it once serving, and reads end-of-file when the supervisor is gone (even killed), and then
stops, so that no worker outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from server.app import StartupError
from server.config import Settings
from server.db.embedded import start_embedded_postgres
from server.metrics import MetricsEndpoint

log = logging.getLogger(__name__)

# Exit status of a start that failed for its configuration (server/__main__.py): restarting cannot help.
CONFIGURATION_ERROR = 2
_FIRST_RESTART_DELAY_SECONDS = 0.5
_LONGEST_RESTART_DELAY_SECONDS = 30.0
# A worker that served this long before dying starts again at once: it was a crash, not a crash loop.
_STABLE_SECONDS = 60.0
_SCRAPE_TIMEOUT_SECONDS = 2.0


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    link: socket.socket  # the supervisor's end of the pair
    started: float
    metrics_port: int | None = None
    ready: bool = False
    exited: asyncio.Future[int] = field(init=False)
    reporting: asyncio.Task[None] | None = None  # reads the worker's report (held here: tasks need a holder)

    def __post_init__(self) -> None:
        self.exited = asyncio.ensure_future(self.process.wait())


class Supervisor:
    """Runs ``settings.workers`` serving processes until a signal, restarting any that dies."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._workers: dict[int, _Worker] = {}
        self._stopping = asyncio.Event()
        self._misconfigured = False
        self.metrics_registry = CollectorRegistry()
        self._restarts = Counter(
            "dataservice_worker_restarts",
            "Workers started again after dying.",
            registry=self.metrics_registry,
        )
        Gauge(
            "dataservice_workers", "Workers running.", registry=self.metrics_registry
        ).set_function(lambda: sum(1 for worker in self._workers.values() if worker.process.returncode is None))
        self.metrics_registry.register(_WorkerMetrics(lambda: list(self._workers.values())))

    async def run(self) -> int:
        """Serves until SIGTERM or SIGINT; returns the process's exit status. Raises StartupError when the
        port is taken or METRICS_PORT cannot be served."""
        _check_port_free(self.settings.grpc_address)
        env = dict(os.environ)
        env.update(
            WORKERS="1",
            # Each worker's share: the budget was divided when the settings were read.
            DB_POOL_MAX_SIZE=str(self.settings.db_pool_max_size),
            DB_POOL_MIN_SIZE=str(self.settings.db_pool_min_size),
            DB_CONNECTION_BUDGET=str(self.settings.db_pool_max_size),
        )
        env.pop("METRICS_PORT", None)  # the supervisor serves it
        if self.settings.database_url is None:
            env["DATABASE_URL"] = await asyncio.to_thread(start_embedded_postgres, self.settings.embedded_pg_dir)
        endpoint = None
        if self.settings.metrics_port is not None:
            try:
                endpoint = MetricsEndpoint(self.metrics_registry, self.settings.metrics_port)
            except OSError as exc:
                raise StartupError(f"METRICS_PORT: cannot serve metrics on {self.settings.metrics_port} ({exc})")
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)
        log.info("supervising", extra={"workers": self.settings.workers, "address": self.settings.grpc_address})
        keepers = [
            asyncio.create_task(self._keep(index, env), name=f"worker-{index}")
            for index in range(self.settings.workers)
        ]
        try:
            await self._stopping.wait()
            codes = await self._stopped(keepers)
        finally:
            for keeper in keepers:
                keeper.cancel()
            if endpoint is not None:
                await asyncio.to_thread(endpoint.close)
        if self._misconfigured:
            return CONFIGURATION_ERROR
        # Killed by the SIGTERM it was sent: a worker stopped before it had installed its handlers.
        failed = [code for code in codes if code not in (0, -signal.SIGTERM)]
        if failed:
            log.error("workers did not stop cleanly", extra={"exit_statuses": codes})
        log.info("stopped")
        return 1 if failed else 0

    def _on_signal(self) -> None:
        self._stopping.set()
        self._signal_all()  # the second signal too: the workers cut their drains short

    def _signal_all(self, signum: int = signal.SIGTERM) -> None:
        for worker in self._workers.values():
            if worker.process.returncode is None:
                worker.process.send_signal(signum)

    async def _stopped(self, keepers: list[asyncio.Task[int | None]]) -> list[int]:
        """Waits for every worker to stop: as long as its own stop may take (the drain, the grace for calls,
        the grace again for closing the pool) and a margin; then kills what is left, a worker that hangs."""
        bound = self.settings.shutdown_drain_seconds + 2 * self.settings.shutdown_grace_seconds + 10.0
        _, hanging = await asyncio.wait(keepers, timeout=bound)
        if hanging:
            log.error("workers did not stop in time: killing them", extra={"waited_seconds": bound})
            self._signal_all(signal.SIGKILL)
        codes = await asyncio.gather(*keepers)
        return [code for code in codes if code is not None]

    async def _keep(self, index: int, env: dict[str, str]) -> int | None:
        """Keeps worker ``index`` running until the supervisor stops; returns its last exit status (None if
        it never started). A worker that served a minute is started again at once; one that keeps dying
        young, after doubling delays. One that fails its start for its configuration would only fail again:
        everything stops."""
        failures = 0
        code = None
        while not self._stopping.is_set():
            worker = await self._start(index, env)
            code = await worker.exited
            worker.link.close()
            if self._stopping.is_set():
                break
            if code == CONFIGURATION_ERROR and not worker.ready:
                log.error("worker could not start for its configuration: stopping", extra={"worker": index})
                self._misconfigured = True
                self._stopping.set()
                self._signal_all()
                break
            served = time.monotonic() - worker.started
            failures = 0 if served >= _STABLE_SECONDS else failures + 1
            delay = (
                min(_LONGEST_RESTART_DELAY_SECONDS, _FIRST_RESTART_DELAY_SECONDS * 2 ** (failures - 1))
                if failures
                else 0.0
            )
            log.error(
                "worker died; starting it again",
                extra={"worker": index, "pid": worker.process.pid, "exit_status": code, "restart_in_seconds": delay},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if not self._stopping.is_set():
                self._restarts.inc()
        return code

    async def _start(self, index: int, env: dict[str, str]) -> _Worker:
        own_end, worker_end = socket.socketpair()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            "worker",
            "--index",
            str(index),
            "--link-fd",
            str(worker_end.fileno()),
            *(["--metrics"] if self.settings.metrics_port is not None else []),
            env=env,
            pass_fds=(worker_end.fileno(),),
            stderr=sys.stderr.fileno(),  # the real stderr: the worker routes grpc's lines itself
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor alone, which passes it on once
        )
        worker_end.close()
        own_end.setblocking(False)
        worker = self._workers[index] = _Worker(index, process, own_end, time.monotonic())
        worker.reporting = asyncio.create_task(self._read_report(worker), name=f"worker-{index}-report")
        log.info("worker started", extra={"worker": index, "pid": process.pid})
        if self._stopping.is_set():  # a signal came while it was being started: it missed the forwarding
            process.send_signal(signal.SIGTERM)
        return worker

    async def _read_report(self, worker: _Worker) -> None:
        """Reads the line the worker writes once it serves: its metrics port."""
        loop = asyncio.get_running_loop()
        received = b""
        while not received.endswith(b"\n"):
            try:
                chunk = await loop.sock_recv(worker.link, 256)
            except OSError:
                return
            if not chunk:
                return  # it died before serving
            received += chunk
        worker.metrics_port = json.loads(received)["metrics_port"]
        worker.ready = True


def _check_port_free(address: str) -> None:
    """Fails when something already listens on ``address``. The workers bind it with SO_REUSEPORT, which
    would let them share the port with another server of the same user (a second supervisor started by
    mistake) instead of failing; a bind without it, tried and released here, fails instead."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds: TIME_WAIT is no owner
            probe.bind(where)
    except OSError:
        raise StartupError(f"GRPC_ADDRESS: cannot bind {address} (in use, or not allowed)") from None


class _WorkerMetrics(Collector):
    """Every worker's metrics, fetched at scrape time from its loopback port, each sample labelled ``worker``.

    Runs in the metrics endpoint's thread, so the blocking fetches hold up nothing but the scrape. A worker
    that does not answer (dying, restarting) is left out of that scrape.
    """

    def __init__(self, workers: Callable[[], list[_Worker]]) -> None:
        self._workers = workers

    def describe(self) -> list[Metric]:
        return []  # the names are the workers': known only at scrape time

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for worker in self._workers():
            if worker.metrics_port is None:
                continue
            url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=_SCRAPE_TIMEOUT_SECONDS) as response:
                    text = response.read().decode()
            except OSError:
                continue
            for family in text_string_to_metric_families(text):
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type, family.unit)
                )
                label = str(worker.index)
                merged.samples.extend(
                    sample._replace(labels={**sample.labels, "worker": label}) for sample in family.samples
                )
        yield from families.values()


class WorkerLink:
    """The worker's end of its socket pair: reports to the supervisor, and notices when it is gone."""

    def __init__(self, fd: int) -> None:
        self._socket = socket.socket(fileno=fd)
        self._socket.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None

    def on_supervisor_gone(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` once the supervisor's end closes (it exited, or was killed)."""
        loop = self._loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                if self._socket.recv(16):
                    return  # the supervisor writes nothing: only end-of-file makes this readable
            except BlockingIOError:
                return
            except OSError:
                pass
            loop.remove_reader(self._socket)
            log.warning("the supervisor is gone: stopping")
            callback()

        loop.add_reader(self._socket, readable)

    def report_serving(self, metrics_port: int | None) -> None:
        self._socket.send(json.dumps({"metrics_port": metrics_port}).encode() + b"\n")

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._socket)
        self._socket.close()
