"""Multi-process serving: a supervisor and WORKERS serving processes that share the gRPC port.

One Python process serves from one core (the event loop and grpc's own work on it). With ``WORKERS`` above 1,
``python -m server`` becomes a supervisor: it starts that many ``python -m server worker`` processes, each a
whole server (its own pool, its sized share of DB_CONNECTION_BUDGET, health monitor and background passes)
bound to the same port with SO_REUSEPORT, so that the kernel spreads incoming connections over them. The
supervisor serves no calls. It:

- starts the embedded PostgreSQL once, when no database is configured, and hands its DSN to the workers;
- forwards SIGTERM/SIGINT to every worker (each drains and stops as a lone server does; a second signal
  cuts the drains short) and exits 0 once all have exited 0;
- restarts a worker that dies, with backoff (a worker that fails its start with a configuration error
  would only fail again: the supervisor then stops the others and exits 2);
- serves METRICS_PORT itself: a scrape collects every worker's metrics (each serves them on a loopback
  port of its own) with a ``worker`` label added, plus ``dataservice_worker_restarts_total``.

Each worker holds one end of a socket pair whose other end the supervisor keeps: the worker reports its
metrics port on it once serving, and reads end-of-file when the supervisor is gone (even killed), and then
stops, so that no worker outlives it.
"""

from __future__ import annotations

import asyncio
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
        self._signals = 0
        self._failures: dict[int, int] = {}
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
        """Serves until SIGTERM or SIGINT; returns the process's exit status."""
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
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)
        endpoint = None
        if self.settings.metrics_port is not None:
            endpoint = MetricsEndpoint(self.metrics_registry, self.settings.metrics_port)
        log.info("supervising", extra={"workers": self.settings.workers, "address": self.settings.grpc_address})
        try:
            for index in range(self.settings.workers):
                if not self._stopping.is_set():
                    await self._start(index, env)
            return await self._supervise(env)
        finally:
            await self._stop_all()
            if endpoint is not None:
                await asyncio.to_thread(endpoint.close)

    def _on_signal(self) -> None:
        self._signals += 1
        self._stopping.set()
        for worker in self._workers.values():  # the second signal too: the workers cut their drains short
            if worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)

    async def _start(self, index: int, env: dict[str, str]) -> None:
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

    async def _supervise(self, env: dict[str, str]) -> int:
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                exits = {worker.exited: worker for worker in self._workers.values()}
                done, _ = await asyncio.wait([stop, *exits], return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    return await self._exit_status()
                for exited in done:
                    worker = exits[exited]
                    worker.link.close()
                    code = exited.result()
                    if code == CONFIGURATION_ERROR and not worker.ready:
                        log.error("worker could not start: stopping", extra={"worker": worker.index})
                        return CONFIGURATION_ERROR
                    delay = self._restart_delay(worker)
                    log.error(
                        "worker died; starting it again",
                        extra={"worker": worker.index, "pid": worker.process.pid, "exit_status": code,
                               "restart_in_seconds": delay},
                    )
                    try:
                        await asyncio.wait_for(asyncio.shield(stop), delay)
                        return await self._exit_status()
                    except TimeoutError:
                        pass
                    self._restarts.inc()
                    await self._start(worker.index, env)
        finally:
            stop.cancel()

    def _restart_delay(self, worker: _Worker) -> float:
        """No delay after a worker that had served a while; doubling delays while it keeps dying young."""
        if time.monotonic() - worker.started >= _STABLE_SECONDS:
            self._failures[worker.index] = 0
            return 0.0
        failures = self._failures[worker.index] = self._failures.get(worker.index, 0) + 1
        return min(_LONGEST_RESTART_DELAY_SECONDS, _FIRST_RESTART_DELAY_SECONDS * 2 ** (failures - 1))

    async def _exit_status(self) -> int:
        """0 when every worker stopped cleanly after the signal."""
        codes = [await worker.exited for worker in self._workers.values()]
        failed = [code for code in codes if code != 0]
        if failed:
            log.error("workers did not stop cleanly", extra={"exit_statuses": codes})
        log.info("stopped")
        return 1 if failed else 0

    async def _stop_all(self) -> None:
        """Ends whatever still runs (on an error path: a worker that failed its start, an exception)."""
        for worker in self._workers.values():
            if worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self._workers.values():
            await worker.exited
            worker.link.close()


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
