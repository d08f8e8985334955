"""Orchestrate one benchmark: servers up, data seeded, calls checked, loads run, JSON out.

Exit status: 0 all checks passed; 1 setup failed (tool, server, seed); 2 bad arguments;
3 the nghttp preflight call did not return grpc-status 0; 4 the count check failed
(h2load's succeeded differs from the server's OK count, or h2load saw failures).
The JSON object is printed on stdout in every case after the arguments parsed, with
``ok`` and ``error`` saying how it ended.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc

from bench import procstat, report, staleness
from bench.config import BenchConfig, parse_config
from bench.frames import write_frames
from bench.h2load import Concurrency, ToolError, Tools, ensure_tools, run_load
from bench.metrics import handled_count, settle
from bench.modes import BY_NAME, NEAR, UNCACHED_MODE, CacheMode
from bench.paths import BASELINE, REFERENCE, USERS, BenchPath, SeedContext, select_paths
from bench.preflight import check_call
from bench.seed import SeededUser
from bench.servers import (
    RedisProcess,
    ServerError,
    ServerProcess,
    database_dsn,
    embedded_pgdata,
    start_echo,
    start_redis,
    start_reference,
    start_service,
)

EXIT_SETUP, EXIT_USAGE, EXIT_PREFLIGHT, EXIT_CHECK = 1, 2, 3, 4
READER = "service-near-b"  # the second near replica, which the staleness probe reads from


class BenchFailure(Exception):
    """A failed run, carrying its exit status; the message is printed as is."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@dataclass(frozen=True)
class Target:
    """A path made ready to load: its server and its frame files."""

    path: BenchPath[Any]
    server: ServerProcess
    frames: list[Path]


class Runner:
    """One benchmark run; holds what every step needs, so the steps stay short."""

    def __init__(self, config: BenchConfig, paths: list[BenchPath[Any]], tools: Tools, workdir: Path) -> None:
        self.config = config
        self.paths = paths
        self.tools = tools
        self.workdir = workdir
        self.pgdata = embedded_pgdata(config.database_url, config.server_env)
        self.rounds: list[report.RoundResult] = []
        self.servers: dict[str, ServerProcess] = {}
        self.redis: RedisProcess | None = None
        self.users: list[SeededUser] = []  # the seeded users, kept for the staleness probe
        self.staleness: dict[str, Any] | None = None
        self.timings: dict[str, float] = {}
        self.peak_rss_since_seeding = False
        self.database_url = ""  # known once the service runs (it may start the embedded PostgreSQL)

    def say(self, message: str) -> None:
        if not self.config.json_only:
            print(message, file=sys.stderr, flush=True)

    async def start_servers(self) -> None:
        """The echo, the uncached service (which seeds, and may start the embedded PostgreSQL), the reference,
        then one service per other cache mode, and the staleness probe's second near replica, on its DSN."""
        self.say(f"starting the echo, the service and the reference (work directory {self.workdir})")
        if any(mode.uses_redis for mode in self.config.cache_modes):
            self.redis = await start_redis(self.workdir)
        self.servers["echo"] = await start_echo(self.workdir)
        self.servers["service"] = await self.start_service("service", UNCACHED_MODE, self.config.database_url)
        self.database_url = await database_dsn(self.config.database_url, self.pgdata)
        self.servers["reference"] = await start_reference(
            self.workdir, database_url=self.database_url, extra_env=self.config.server_env
        )
        cached = {mode.server: mode for mode in self.config.cache_modes if mode is not UNCACHED_MODE}
        if self.config.staleness:
            cached[READER] = BY_NAME[NEAR]
        if cached:
            self.say(f"starting {', '.join(cached)} (Redis on port {self.redis.port if self.redis else '-'})")
        # Together, to save their start-up time; every one that started is kept, so that it is stopped too.
        started = await asyncio.gather(
            *(self.start_service(name, mode, self.database_url) for name, mode in cached.items()),
            return_exceptions=True,
        )
        self.servers.update(
            (name, server) for name, server in zip(cached, started) if isinstance(server, ServerProcess)
        )
        failures = [failure for failure in started if isinstance(failure, BaseException)]
        if failures:
            raise failures[0]

    async def start_service(self, name: str, mode: CacheMode, database_url: str | None) -> ServerProcess:
        return await start_service(
            self.workdir,
            name,
            database_url=database_url,
            cache_env=mode.environment(self.redis.url if self.redis else None),
            extra_env=self.config.server_env,
            timeout_s=self.config.start_timeout_s,
        )

    async def stop_servers(self) -> None:
        """The services first, so none of them sees its Redis go away while it still serves."""
        await asyncio.gather(*(server.stop() for server in self.servers.values()))
        if self.redis is not None:
            await self.redis.stop()

    async def prepare(self) -> list[Target]:
        """Seed what the paths read (each seed once), then write each path's frames."""
        self.say(f"seeding {', '.join(sorted({path.seed.name for path in self.paths}))}")
        targets = []
        async with grpc.aio.insecure_channel(self.servers["service"].target) as channel:
            context = SeedContext(
                channel,
                self.database_url,
                users=self.config.users,
                sessions=self.config.sessions,
                contents=self.config.contents,
            )
            if self.config.staleness:
                self.users = await context.need(USERS)
            for path in self.paths:
                messages = path.build(await context.need(path.seed), self.config.keys)
                frames = write_frames(self.workdir / "frames", path.name, messages)
                targets.append(Target(path, self.servers[path.server], frames))
        return targets

    async def preflight(self, targets: list[Target]) -> None:
        for target in targets:
            check = await check_call(
                self.tools.nghttp, target.server.url(target.path.method), target.frames[0]
            )
            if not check.ok:
                raise BenchFailure(
                    f"preflight: one {target.path.name} call ({target.path.method}) returned {check.describe()}",
                    EXIT_PREFLIGHT,
                )
            self.say(f"preflight {target.path.name}: grpc-status 0")

    def _load_timeout_s(self) -> float:
        return 5 * max(self.config.duration_s, self.config.warmup_s) + 60

    async def warm_up(self, target: Target, concurrency: Concurrency) -> int:
        """Run for --warmup seconds unmeasured; return the request count that lasts about --duration."""
        result = await run_load(
            self.tools,
            target.server.url(target.path.method),
            target.frames,
            concurrency,
            self.workdir / "logs",
            duration_s=self.config.warmup_s,
            timeout_s=self._load_timeout_s(),
        )
        await settle(target.server.metrics_port, target.path.method)
        return max(math.ceil(result.rps * self.config.duration_s), 2 * concurrency.in_flight)

    async def measure(
        self, target: Target, concurrency: Concurrency, requests: int, round_number: int
    ) -> report.RoundResult:
        """One measured load with the server's OK count and CPU sampled around it."""
        server, method = target.server, target.path.method
        ok_before = await handled_count(server.metrics_port, method)
        server_before = procstat.cpu_ticks(procstat.server_pids(server.pid))
        pg_before = procstat.cpu_ticks(procstat.postgres_pids(self.pgdata))
        # Only a Redis mode's row is charged the Redis CPU; the other modes' processes leave it idle meanwhile.
        redis_pids = {self.redis.pid} if self.redis and target.path.mode.uses_redis else set()
        redis_before = procstat.cpu_ticks(redis_pids)
        result = await run_load(
            self.tools,
            server.url(method),
            target.frames,
            concurrency,
            self.workdir / "logs",
            requests=requests,
            timeout_s=self._load_timeout_s(),
        )
        pids = procstat.server_pids(server.pid)
        server_cpu = procstat.cpu_seconds_between(server_before, procstat.cpu_ticks(pids))
        pg_pids = procstat.postgres_pids(self.pgdata)
        pg_cpu = procstat.cpu_seconds_between(pg_before, procstat.cpu_ticks(pg_pids)) if pg_pids else None
        redis_cpu = procstat.cpu_seconds_between(redis_before, procstat.cpu_ticks(redis_pids)) if redis_pids else None
        server_ok = await handled_count(server.metrics_port, method) - ok_before

        def per_call(seconds: float | None) -> float | None:
            return None if seconds is None or server_ok <= 0 else seconds * 1e6 / server_ok

        counts = result.counts
        measured = report.RoundResult(
            path=target.path.name,
            concurrency=concurrency.label,
            round=round_number,
            requests=counts.total,
            succeeded=counts.succeeded,
            failed=counts.failed,
            errored=counts.errored,
            timeout=counts.timeout,
            server_ok=server_ok,
            elapsed_s=result.elapsed_s,
            rps=result.rps,
            p50_ms=result.percentile_ms(0.50),
            p99_ms=result.percentile_ms(0.99),
            server_cpu_us_per_call=per_call(server_cpu),
            postgres_cpu_us_per_call=per_call(pg_cpu),
            redis_cpu_us_per_call=per_call(redis_cpu),
            server_rss_mib=procstat.rss_bytes(pids) / report.MIB,
        )
        self.rounds.append(measured)
        where = f"{target.path.name} ({method}) at {concurrency.label}, round {round_number}"
        if counts.succeeded != server_ok:
            raise BenchFailure(
                f"count check failed: {where}: h2load succeeded {counts.succeeded}, the server counted {server_ok} OK "
                "(a failed gRPC call is still HTTP 200 to h2load)",
                EXIT_CHECK,
            )
        if counts.failed or counts.errored or counts.timeout:
            raise BenchFailure(
                f"count check failed: {where}: h2load saw {counts.failed} failed, {counts.errored} errored, "
                f"{counts.timeout} timed-out requests",
                EXIT_CHECK,
            )
        return measured

    async def run(self) -> None:
        started = time.monotonic()
        await self.start_servers()
        self.timings["start_s"] = round(time.monotonic() - started, 1)
        targets = await self.prepare()
        self.timings["seed_s"] = round(time.monotonic() - started - self.timings["start_s"], 1)
        self.peak_rss_since_seeding = all(
            [procstat.reset_peak_rss(server.pid) for server in self.servers.values()]
        )
        if self.config.preflight:
            await self.preflight(targets)
        for concurrency in self.config.concurrency:
            # Warm every path first, then interleave the rounds so that noise on the
            # shared cores falls on the echo and the paths alike.
            requests = {}
            for target in targets:
                requests[target.path.name] = await self.warm_up(target, concurrency)
            for round_number in range(1, self.config.rounds + 1):
                for target in targets:
                    measured = await self.measure(
                        target, concurrency, requests[target.path.name], round_number
                    )
                    self.say(
                        f"[{concurrency.label} round {round_number}/{self.config.rounds}] {target.path.name}: "
                        f"{measured.rps:.0f} RPC/s, p99 {report.cell(measured.p99_ms, '.2f')} ms, "
                        f"CPU {report.cell(measured.server_cpu_us_per_call, '.0f')} µs/call"
                    )
        if self.config.staleness:
            await self.probe_staleness()
        self.timings["total_s"] = round(time.monotonic() - started, 1)

    async def probe_staleness(self) -> None:
        """The cross-replica probe (bench/staleness.py), after the measured rounds so that its writes and its
        load touch none of them; at the run's highest concurrency."""
        concurrency = max(self.config.concurrency, key=lambda setting: setting.in_flight)
        writer = BY_NAME[NEAR].server
        self.say(
            f"staleness: {self.config.staleness_rounds} writes on {writer}, reads on {READER} "
            f"under GetUser load at {concurrency.label}"
        )
        result = await staleness.measure_staleness(
            self.tools,
            self.servers[writer],
            self.servers[READER],
            self.users,
            keys=self.config.keys,
            concurrency=concurrency,
            rounds=self.config.staleness_rounds,
            workdir=self.workdir,
        )
        self.staleness = result.as_json()
        if result.problem:
            raise BenchFailure(result.problem, EXIT_CHECK)


def _mask(url: str) -> str:
    """The URL without its password, for the JSON."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _mib(size: int | None) -> float | None:
    return None if size is None else round(size / report.MIB, 1)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _document(
    config: BenchConfig, paths: list[BenchPath[Any]], runner: Runner | None, tools: Tools | None
) -> dict[str, Any]:
    rounds = runner.rounds if runner else []
    pids: dict[str, int] = {name: server.pid for name, server in (runner.servers if runner else {}).items()}
    if runner and runner.redis:
        pids["redis"] = runner.redis.pid
    return {
        "benchmark": "dataservice unary paths vs a bare grpc.aio echo and a minimal reference GetUser, driven by h2load",
        "ok": False,
        "error": None,
        "parameters": {
            "duration_s": config.duration_s,
            "warmup_s": config.warmup_s,
            "concurrency": [c.label for c in config.concurrency],
            "rounds": config.rounds,
            "users": config.users,
            "sessions": config.sessions,
            "contents": config.contents,
            "keys": config.keys,
            "paths": {path.name: path.method for path in paths},
            "database": _mask(config.database_url) if config.database_url else "embedded",
            # Each mode's environment (REDIS_URL aside, which names the run's private Redis).
            "cache_modes": {mode.name: dict(mode.env) for mode in config.cache_modes},
            "staleness_rounds": config.staleness_rounds if config.staleness else 0,
            "server_env": config.server_env,
            "preflight": config.preflight,
        },
        "environment": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "h2load": tools.version if tools else None,
            "python": platform.python_version(),
            "grpcio": _version("grpcio"),
            "uvloop": _version("uvloop"),
            "cpus": os.cpu_count(),
        },
        "results": report.build_results(
            rounds,
            [(c.label, c.connections, c.streams) for c in config.concurrency],
            [
                report.Row(path.name, path.method, path.server, path.items, path.mode.name, path.uncached_row)
                for path in paths
            ],
            BASELINE,
            REFERENCE,
        ),
        "staleness": runner.staleness if runner else None,
        "servers": {
            name: {"pid": pid, "peak_rss_mib": _mib(procstat.peak_rss_bytes(pid))} for name, pid in pids.items()
        },
        # True when peak_rss_mib covers only the loads (VmHWM was reset after seeding).
        "peak_rss_excludes_seeding": runner.peak_rss_since_seeding if runner else False,
        "timings": runner.timings if runner else {},
        # Whose CPU postgres_cpu_us_per_call adds up: the embedded postmaster's tree, or every local postgres.
        "postgres_cpu_scope": (
            "embedded" if runner and runner.pgdata and procstat.postmaster_pid(runner.pgdata) else "local"
        ),
        "workdir": None,
    }


async def _run(config: BenchConfig, paths: list[BenchPath[Any]]) -> tuple[dict[str, Any], int]:
    tools: Tools | None = None
    runner: Runner | None = None
    if config.workdir is not None:
        config.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dataservice-bench-", dir=config.workdir))
    error: BenchFailure | None = None
    try:
        tools = ensure_tools(install=config.install)
        runner = Runner(config, paths, tools, workdir)
        await runner.run()
    except BenchFailure as failure:
        error = failure
    except (ToolError, ServerError, grpc.aio.AioRpcError, OSError) as failure:
        text = (
            f"{failure.code().name}: {failure.details()}"
            if isinstance(failure, grpc.aio.AioRpcError)
            else str(failure)
        )
        error = BenchFailure(f"setup failed: {text}", EXIT_SETUP)
    finally:
        document = _document(config, paths, runner, tools)  # before stopping: peak RSS needs the live pids
        if runner is not None:
            await runner.stop_servers()
    document["ok"] = error is None
    document["error"] = str(error) if error else None
    if config.keep_workdir or (error is not None and any(workdir.iterdir())):
        document["workdir"] = str(workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return document, error.exit_status if error else 0


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    try:
        paths = select_paths(config.only, config.overrides, config.cache_modes)
    except ValueError as error:
        print(f"python -m bench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    document, status = asyncio.run(_run(config, paths))
    text = json.dumps(document, indent=2, ensure_ascii=False)
    print(text, flush=True)
    if config.output is not None:
        config.output.write_text(text + "\n")
    if not config.json_only and any(block["paths"] for block in document["results"]):
        print("\n" + report.table(document["results"]), file=sys.stderr)
    if not config.json_only and document["staleness"]:
        print(staleness.describe(document["staleness"]) + "\n", file=sys.stderr)
    if document["error"]:
        print(
            f"FAILED: {document['error']}"
            + (f" (logs in {document['workdir']})" if document["workdir"] else ""),
            file=sys.stderr,
        )
    return status
