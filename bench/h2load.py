"""Run h2load against one gRPC method and read back its counts and per-request log.

h2load (Debian's ``nghttp2-client``) is a C load generator: a Python client would
spend ≈ 270 µs of CPU per call on the same two cores and hide the server's ceiling.
It cannot vary the body, so a load that wants several keys runs one h2load process
per pre-built frame, the connections split among them, all at once.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "nghttp2-client"


class ToolError(RuntimeError):
    """h2load or nghttp is missing or misbehaved; the message says what to do."""


@dataclass(frozen=True)
class Tools:
    h2load: str
    nghttp: str
    version: str


def _which_both() -> tuple[str, str] | None:
    h2load, nghttp = shutil.which("h2load"), shutil.which("nghttp")
    return (h2load, nghttp) if h2load and nghttp else None


def ensure_tools(*, install: bool = True) -> Tools:
    """Find h2load and nghttp, installing Debian's nghttp2-client when root and allowed.

    Installing is the one side effect: the benchmark cannot run without them, and on a
    fresh machine (CI, a new developer box) root with apt is the normal case.
    """
    found = _which_both()
    if found is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        command = ["apt-get", "install", "-y", "-q", PACKAGE]
        result = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        )
        if result.returncode != 0:  # a fresh machine may not have the package lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        found = _which_both()
        if found is None:
            raise ToolError(f"installing {PACKAGE} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    if found is None:
        raise ToolError(
            f"h2load and nghttp are needed: install Debian's {PACKAGE} "
            f"(apt-get install -y {PACKAGE}), or run as root to let the runner install it"
        )
    version = subprocess.run([found[0], "--version"], capture_output=True, text=True).stdout.strip()
    return Tools(h2load=found[0], nghttp=found[1], version=version)


@dataclass(frozen=True, order=True)
class Concurrency:
    """h2load's ``-c`` connections and ``-m`` concurrent streams per connection."""

    connections: int
    streams: int

    @classmethod
    def parse(cls, text: str) -> Concurrency:
        """``"4x25"`` → 4 connections × 25 streams; ``"4"`` → 4 × 1."""
        parts = text.strip().lower().split("x")
        try:
            values = [int(part) for part in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2) or min(values) < 1:
            raise ValueError(f"concurrency is CONNECTIONSxSTREAMS with both ≥ 1, like 4x25, got {text!r}")
        return cls(values[0], values[1] if len(values) == 2 else 1)

    @property
    def label(self) -> str:
        return f"{self.connections}x{self.streams}"

    @property
    def in_flight(self) -> int:
        return self.connections * self.streams


@dataclass(frozen=True)
class Counts:
    """The ``requests:`` line of one h2load summary."""

    total: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, ...]:
        return (self.total, self.started, self.done, self.succeeded, self.failed, self.errored, self.timeout)


_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout"
)


def parse_counts(output: str) -> Counts:
    """The request counts of one h2load run's standard output."""
    match = _REQUESTS.search(output)
    if match is None:
        raise ToolError(f"h2load printed no 'requests:' summary:\n{output[-3000:]}")
    return Counts(*(int(group) for group in match.groups()))


@dataclass(frozen=True)
class LoadResult:
    """One load (all its h2load processes) added up."""

    counts: Counts
    elapsed_s: float  # first request sent → last response received, over every process
    latencies_us: list[int]  # of succeeded requests, sorted

    @property
    def rps(self) -> float:
        return self.counts.succeeded / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, fraction: float) -> float | None:
        """Nearest-rank percentile of the request latencies, in milliseconds."""
        latency_us = nearest_rank(self.latencies_us, fraction)
        return None if latency_us is None else latency_us / 1000.0


def nearest_rank(ordered: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted values (one of them, never an interpolation); None when empty."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def read_log(paths: list[Path]) -> tuple[float, list[int]]:
    """Span in seconds and sorted latencies (µs) of the 2xx rows of h2load ``--log-file`` logs.

    Rows are ``start µs since epoch <TAB> HTTP status (-1 when the stream failed) <TAB>
    µs until the end of the response``.
    """
    first_start, last_end = math.inf, -math.inf
    latencies: list[int] = []
    for path in paths:
        with path.open() as log:
            for line in log:
                fields = line.split("\t")
                if len(fields) < 3:
                    continue
                start, status, latency = int(fields[0]), int(fields[1]), int(fields[2])
                first_start = min(first_start, start)
                last_end = max(last_end, start + latency)
                if 200 <= status < 300:
                    latencies.append(latency)
    latencies.sort()
    span = (last_end - first_start) / 1e6 if latencies else 0.0
    return span, latencies


def split_evenly(total: int, parts: int) -> list[int]:
    """total split into parts integers that differ by at most one, larger first."""
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


async def run_load(
    tools: Tools,
    url: str,
    frames: list[Path],
    concurrency: Concurrency,
    log_dir: Path,
    *,
    requests: int | None = None,
    duration_s: float | None = None,
    timeout_s: float,
) -> LoadResult:
    """Run one load: a fixed request count (exact, for the count check) or a fixed duration.

    One h2load process per frame, at most one per connection, the connections and
    requests split evenly among them. ``-D`` abandons the requests in flight when the
    time is up, which the server may still answer, so only a ``requests`` load can be
    compared exactly with the server's count; ``duration_s`` is for warm-ups.
    """
    if (requests is None) == (duration_s is None):
        raise ValueError("give exactly one of requests and duration_s")
    processes = min(len(frames), concurrency.connections)
    connections = split_evenly(concurrency.connections, processes)
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = [log_dir / f"h2load.{index}.log" for index in range(processes)]
    for log in logs:
        log.unlink(missing_ok=True)  # h2load appends

    commands: list[list[str]] = []
    for index in range(processes):
        if requests is not None:  # each process's share, by its connections
            share = math.ceil(requests * connections[index] / concurrency.connections)
            amount = ["-n", str(max(connections[index], share))]
        else:
            assert duration_s is not None
            amount = ["-D", f"{max(1, round(duration_s * 1000))}ms"]
        # fmt: off
        commands.append([
            tools.h2load, "-t", "1",
            "-c", str(connections[index]), "-m", str(concurrency.streams), *amount,
            "-d", str(frames[index]),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "--log-file", str(logs[index]),
            url,
        ])
        # fmt: on

    runs = [
        await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        for command in commands
    ]
    try:
        outputs = await asyncio.wait_for(asyncio.gather(*(run.communicate() for run in runs)), timeout_s)
    except TimeoutError:
        for run in runs:
            if run.returncode is None:
                run.kill()
        await asyncio.gather(*(run.wait() for run in runs))
        raise ToolError(
            f"h2load did not finish within {timeout_s:g}s against {url}: is the server stuck?"
        ) from None

    counts = Counts(0, 0, 0, 0, 0, 0, 0)
    for run, (out, _) in zip(runs, outputs):
        text = out.decode("utf-8", errors="replace")
        if run.returncode != 0:
            raise ToolError(f"h2load exited {run.returncode} against {url}:\n{text[-3000:]}")
        counts = counts + parse_counts(text)
    span, latencies = read_log(logs)
    return LoadResult(counts=counts, elapsed_s=span, latencies_us=latencies)
