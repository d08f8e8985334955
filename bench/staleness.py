"""How long one replica's near cache answers a value another replica has already changed, under load.

Two ``near`` replicas share the database and the Redis: A (the measured ``near`` service) takes the writes,
B (a second process with the same settings) takes an h2load GetUser load on a few users. For each round the
probe changes one of those users' display_name on A, notes when A's answer arrived, and reads the user on B
until B answers the new name. B's stale answers are the window in which a client that writes on one replica
and reads on another sees its own write undone; the delay is A's answer → B's first fresh answer, and so
includes at least one GetUser on B queued behind the load. The users are the ones B's load reads, so their
entries are hot in B's near cache when A writes: the case where an invalidation has to arrive.

B's ``dataservice_cache_invalidation_lag_seconds`` (the server's heartbeat probes of its invalidation stream),
when it exposes it, gives the same lag from the inside, over the probe's span.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc as pb_grpc
from google.protobuf import field_mask_pb2

from bench.frames import write_frames
from bench.h2load import Concurrency, Counts, Tools, nearest_rank, run_load
from bench.metrics import (
    Buckets,
    bucket_increase,
    histogram_buckets,
    histogram_quantile,
    parse_handled_count,
    scrape,
)
from bench.paths import USER_SERVICE, get_user_requests, spread
from bench.seed import SeededUser
from bench.servers import ServerProcess

GET_USER = f"{USER_SERVICE}/GetUser"
LAG_HISTOGRAM = "dataservice_cache_invalidation_lag_seconds"
FRESH_WITHIN_S = 10.0  # a round whose write B has not shown by then counts as never fresh (and fails the run)
LOAD_SLICE_S = 1.0  # the load runs in slices of about this, so it ends within one slice of the probe
FIRST_SLICE_PER_STREAM = 10  # requests per stream in flight of the first slice, before a rate is known
LOAD_LEAD_S = 0.5  # the load runs this long before the first write, so the probe starts under it
CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ProbeRound:
    """One write on A and B's answers after it."""

    stale_answers: int
    delay_s: float | None  # A's answer → B's first fresh answer; None when none came within FRESH_WITHIN_S

    @property
    def reads(self) -> int:
        """GetUser calls this round made on B (every one answered OK, or the probe would have raised)."""
        return self.stale_answers + (0 if self.delay_s is None else 1)


@dataclass
class LoadTally:
    """B's GetUser load over the probe, added up over its slices."""

    counts: Counts
    elapsed_s: float

    def add(self, counts: Counts, elapsed_s: float) -> None:
        self.counts = self.counts + counts
        self.elapsed_s += elapsed_s


@dataclass(frozen=True)
class StalenessResult:
    """What the probe saw on the reader, and what its load did there; as_json is the report's ``staleness``."""

    writer: str
    reader: str
    concurrency: str
    rounds: list[ProbeRound]
    users: int
    load: LoadTally
    server_ok: int  # B's OK GetUser answers over the probe, by its own count: the load's and the probe's
    server_not_ok: int  # B's other GetUser answers over the probe
    lag_buckets: Buckets | None  # B's invalidation lag histogram over the probe; None when not exposed

    @property
    def problem(self) -> str | None:
        """Why this result fails the run: a write B never showed, a failed GetUser, or B's OK count differing
        from the load's successes plus the probe's reads (as the measured rows' count check)."""
        never_fresh = sum(1 for probe in self.rounds if probe.delay_s is None)
        counts = self.load.counts
        probe_reads = sum(probe.reads for probe in self.rounds)
        if never_fresh:
            return (
                f"staleness: {never_fresh} of {len(self.rounds)} writes on {self.writer} "
                f"never showed on {self.reader}"
            )
        if counts.failed or counts.errored or counts.timeout or self.server_not_ok:
            return (
                f"staleness: {self.reader}'s GetUser load failed under the writes: h2load {counts.failed} failed, "
                f"{counts.errored} errored, {counts.timeout} timed out; the server answered {self.server_not_ok} non-OK"
            )
        if self.server_ok != counts.succeeded + probe_reads:
            return (
                f"staleness: count check failed on {self.reader}: h2load succeeded {counts.succeeded} and the probe "
                f"read {probe_reads}, the server counted {self.server_ok} OK"
            )
        return None

    @staticmethod
    def _lag_ms(buckets: Buckets) -> dict[str, Any]:
        """Count and p50/p99 of the lag histogram's increase, estimated from its buckets, in milliseconds."""

        def quantile_ms(fraction: float) -> float | None:
            seconds = histogram_quantile(fraction, buckets)
            return None if seconds is None else round(seconds * 1000, 3)

        return {"count": int(buckets[-1][1]) if buckets else 0, "p50": quantile_ms(0.50), "p99": quantile_ms(0.99)}

    def as_json(self) -> dict[str, Any]:
        delays_ms = sorted(probe.delay_s * 1000 for probe in self.rounds if probe.delay_s is not None)

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        counts = self.load.counts
        return {
            "writer": self.writer,
            "reader": self.reader,
            "concurrency": self.concurrency,
            "rounds": len(self.rounds),
            "users": self.users,
            "stale_answers": sum(probe.stale_answers for probe in self.rounds),
            "rounds_with_stale_answers": sum(1 for probe in self.rounds if probe.stale_answers),
            "never_fresh": len(self.rounds) - len(delays_ms),
            "delay_ms": {
                "p50": rounded(nearest_rank(delays_ms, 0.50)),
                "p99": rounded(nearest_rank(delays_ms, 0.99)),
                "max": rounded(delays_ms[-1] if delays_ms else None),
            },
            "load": {
                "requests": counts.total,
                "succeeded": counts.succeeded,
                "failed": counts.failed,
                "errored": counts.errored,
                "timeout": counts.timeout,
                "server_ok": self.server_ok,
                "server_not_ok": self.server_not_ok,
                "probe_reads": sum(probe.reads for probe in self.rounds),
                "rps": rounded(counts.succeeded / self.load.elapsed_s if self.load.elapsed_s > 0 else None),
            },
            "invalidation_lag_ms": None if self.lag_buckets is None else self._lag_ms(self.lag_buckets),
        }


async def probe_round(
    writer: pb_grpc.UserServiceStub, reader: pb_grpc.UserServiceStub, user_id: str, name: str
) -> ProbeRound:
    """Rename user_id on the writer, then read it on the reader until the new name shows."""
    await writer.UpdateUser(
        pb.UpdateUserRequest(
            user=pb.User(id=user_id, display_name=name), update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
        ),
        timeout=CALL_TIMEOUT_S,
    )
    written = time.perf_counter()
    stale = 0
    while time.perf_counter() - written < FRESH_WITHIN_S:
        answer = await reader.GetUser(pb.GetUserRequest(id=user_id), timeout=CALL_TIMEOUT_S)
        if answer.user.display_name == name:
            return ProbeRound(stale, time.perf_counter() - written)
        stale += 1
    return ProbeRound(stale, None)


async def probe(writer: ServerProcess, reader: ServerProcess, user_ids: list[str], rounds: int) -> list[ProbeRound]:
    """rounds writes, one at a time, cycling over user_ids; each name is new (this run's tag and the round)."""
    tag = uuid.uuid4().hex[:8]
    async with (
        grpc.aio.insecure_channel(writer.target) as writer_channel,
        grpc.aio.insecure_channel(reader.target) as reader_channel,
    ):
        writer_stub, reader_stub = pb_grpc.UserServiceStub(writer_channel), pb_grpc.UserServiceStub(reader_channel)
        return [
            await probe_round(writer_stub, reader_stub, user_ids[index % len(user_ids)], f"bench-stale-{tag}-{index}")
            for index in range(rounds)
        ]


async def load_until(
    done: asyncio.Event, tools: Tools, url: str, frames: list[Path], concurrency: Concurrency, log_dir: Path
) -> LoadTally:
    """h2load slices of about LOAD_SLICE_S until done is set: a load as long as the probe, whatever that takes.

    Each slice is a request count (sized from the previous slice's rate), not a duration: h2load then waits
    for every answer, so no request is abandoned in flight (the server would count it as CANCELLED) and the
    load's successes can be checked exactly against the server's count.
    """
    tally = LoadTally(Counts(0, 0, 0, 0, 0, 0, 0), 0.0)
    requests = FIRST_SLICE_PER_STREAM * concurrency.in_flight
    while not done.is_set():
        result = await run_load(
            tools, url, frames, concurrency, log_dir, requests=requests, timeout_s=LOAD_SLICE_S * 5 + 60
        )
        tally.add(result.counts, result.elapsed_s)
        requests = max(math.ceil(result.rps * LOAD_SLICE_S), 2 * concurrency.in_flight)
    return tally


async def _answers(server: ServerProcess) -> tuple[int, int]:
    """B's GetUser answers so far, from one scrape: OK, and any code."""
    exposition = await scrape(server.metrics_port)
    return parse_handled_count(exposition, GET_USER), parse_handled_count(exposition, GET_USER, code=None)


async def _lag_buckets(server: ServerProcess) -> Buckets | None:
    return histogram_buckets(await scrape(server.metrics_port), LAG_HISTOGRAM)


async def measure_staleness(
    tools: Tools,
    writer: ServerProcess,
    reader: ServerProcess,
    users: list[SeededUser],
    *,
    keys: int,
    concurrency: Concurrency,
    rounds: int,
    workdir: Path,
) -> StalenessResult:
    """The probe on writer and reader while h2load keeps GetUser load on the reader (keys users, as the
    GetUser rows read them)."""
    loaded = spread(users, keys)
    frames = write_frames(workdir / "frames", "staleness", get_user_requests(users, keys))
    (ok_before, answered_before), lag_before = await _answers(reader), await _lag_buckets(reader)
    done = asyncio.Event()
    load = asyncio.create_task(
        load_until(done, tools, reader.url(GET_USER), frames, concurrency, workdir / "logs" / "staleness")
    )
    try:
        await asyncio.sleep(LOAD_LEAD_S)
        probed = await probe(writer, reader, [user.id for user in loaded], rounds)
    finally:
        done.set()
        tally = await load
    ok_after, answered_after = await _answers(reader)
    lag_after = await _lag_buckets(reader)
    return StalenessResult(
        writer=writer.name,
        reader=reader.name,
        concurrency=concurrency.label,
        rounds=probed,
        users=len({user.id for user in loaded}),
        load=tally,
        server_ok=ok_after - ok_before,
        server_not_ok=(answered_after - ok_after) - (answered_before - ok_before),
        lag_buckets=None if lag_after is None else bucket_increase(lag_before or [], lag_after),
    )


def describe(result: dict[str, Any]) -> str:
    """The staleness result (as_json's) in a few lines for the table."""
    delay, load, lag = result["delay_ms"], result["load"], result["invalidation_lag_ms"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lag_text = (
        "not exposed"
        if lag is None
        else f"p50 {ms(lag['p50'])} ms, p99 {ms(lag['p99'])} ms over {lag['count']} heartbeats"
    )
    return "\n".join(
        [
            f"staleness: writes on {result['writer']}, reads on {result['reader']} under GetUser load "
            f"at {result['concurrency']} ({load['rps'] or 0:.0f} RPC/s, {load['succeeded']} succeeded, "
            f"{load['failed'] + load['errored'] + load['timeout'] + load['server_not_ok']} failed)",
            f"  {result['rounds']} writes over {result['users']} users: {result['stale_answers']} stale answers "
            f"in {result['rounds_with_stale_answers']} rounds, {result['never_fresh']} never fresh",
            f"  write answered → fresh read on the other replica: p50 {ms(delay['p50'])} ms, "
            f"p99 {ms(delay['p99'])} ms, max {ms(delay['max'])} ms",
            f"  {result['reader']}'s invalidation lag histogram: {lag_text}",
        ]
    )
