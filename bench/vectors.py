"""Benchmark of EmbeddingService: bulk load, HNSW build, recall against exact search, and search throughput over
gRPC (h2load) beside the same query run directly on asyncpg.

``python -m bench.vectors`` starts one service process (as ``python -m bench`` does), loads a clustered
synthetic data set through ImportEmbeddings, times a REINDEX of its HNSW index in SQL, takes the service's
exact search as ground truth, and for each ``--ef-search``: recall@10, then QPS and latency of
SearchEmbeddings under h2load (count-checked against the server's own OK count) and of the same transaction
on an asyncpg pool of the service's size. Filtered recall at 1 % and 10 % selectivity and the recall of a
uniform data set follow. One JSON object goes to stdout, a table to stderr.

Exit status: as ``python -m bench`` (bench/run.py): 0 all checks passed, 1 setup failed, 3 the preflight call
failed, 4 the count check failed. A missed target is reported, never a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import uvloop
from dataservice.v1 import embedding_service_pb2 as pb
from dataservice.v1 import embedding_service_pb2_grpc as pb_grpc

from bench import config as bench_config
from bench.frames import write_frames
from bench.h2load import Concurrency, ToolError, ensure_tools, nearest_rank
from bench.modes import UNCACHED_MODE
from bench.paths import BenchPath, Seed, SeedContext
from bench.run import EXIT_SETUP, BenchFailure, Runner, Target, _version
from bench.servers import ServerError, ServerProcess, database_dsn, service_env
from server.config import Settings
from server.db.pool import create_pool
from server.domain.embeddings import Collection as StoredCollection
from server.domain.embeddings import DistanceMetric, EmbeddingFilter, Query, SearchParams
from server.store.embeddings import SearchStatement, search_statement
from server.secret import mask_url

SEARCH = "/dataservice.v1.EmbeddingService/SearchEmbeddings"
TOP_K = 10
IMPORT_BATCH = 1000  # embeddings per ImportEmbeddingsRequest, the service's maximum
RECALL_CONCURRENCY = 4  # searches in flight while collecting recall: enough to hide round trips, not a load
SELECTIVE_TAGS = {"p1": 0.01, "p10": 0.10}  # filter tag → share of the items carrying it
DEFAULT_EF = 100  # the server's EMBEDDING_EF_SEARCH default, which the targets are stated at
TARGET_RECALL, TARGET_QPS_RATIO, TARGET_FILTERED_RECALL = 0.95, 0.70, 0.90


@dataclass(frozen=True)
class VectorConfig:
    """The run's knobs, checked once."""

    vectors: int
    dimension: int
    queries: int
    clusters: int
    noise: float
    """Standard deviation of a point around its cluster centre, per dimension (centres are N(0, 1))."""
    uniform_vectors: int
    """Size of the uniform data set; 0 skips it."""
    seed: int
    duration_s: float
    warmup_s: float
    concurrency: Concurrency
    ef_search: tuple[int, ...]
    database_url: str | None
    json_only: bool
    install: bool
    start_timeout_s: float


def parse_config(argv: Sequence[str] | None = None) -> VectorConfig:
    """Parse and check the flags, naming the one that is wrong."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.vectors",
        description="Measure EmbeddingService: load, HNSW build, recall@10 and search QPS (gRPC beside direct SQL).",
    )
    add = parser.add_argument
    add("--vectors", type=int, default=100_000, help="clustered vectors to load (default 100000)")
    add("--dimension", type=int, default=384, help="vector dimension (default 384)")
    add("--queries", type=int, default=200, help="query vectors, not in the data (default 200)")
    add("--clusters", type=int, default=100, help="Gaussian clusters of the clustered set (default 100)")
    add("--noise", type=float, default=0.5, help="per-dimension spread around a cluster centre (default 0.5)")
    add("--uniform-vectors", type=int, default=None, help="size of the uniform set (default: --vectors)")
    add("--no-uniform", action="store_true", help="skip the uniform data set")
    add("--seed", type=int, default=1, help="seed of the synthetic data (default 1)")
    add("--duration", type=float, default=10.0, metavar="SECONDS", help="each QPS run (default 10)")
    add("--warmup", type=float, default=2.0, metavar="SECONDS", help="unmeasured run before each (default 2)")
    add("--concurrency", default="4x25", metavar="CxM", help="h2load connections x streams (default 4x25)")
    add("--ef-search", default="40,100,200", metavar="N,...", help="HNSW ef_search values (default 40,100,200)")
    add(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL") or None,
        help="PostgreSQL with pgvector for the service (default $BENCH_DATABASE_URL; unset: the embedded one)",
    )
    add("--json-only", action="store_true", help="print only the JSON (no progress, no table)")
    add("--no-install", dest="install", action="store_false", help="never apt-get install nghttp2-client")
    add("--start-timeout", type=float, default=180.0, metavar="SECONDS", help="service start limit (default 180)")
    args = parser.parse_args(argv)
    problems = [
        f"{flag} must be at least {minimum}, got {value}"
        for flag, value, minimum in (
            ("--vectors", args.vectors, TOP_K),
            ("--dimension", args.dimension, 2),
            ("--queries", args.queries, 1),
            ("--clusters", args.clusters, 1),
            ("--duration", args.duration, 0.1),
            ("--warmup", args.warmup, 0.1),
        )
        if value < minimum
    ]
    try:
        concurrency = Concurrency.parse(args.concurrency)
    except ValueError as error:
        problems.append(f"--concurrency: {error}")
    try:
        ef_search = tuple(int(item) for item in args.ef_search.split(",") if item.strip())
    except ValueError:
        ef_search = ()
    if not ef_search or not all(1 <= ef <= 1000 for ef in ef_search):
        problems.append(f"--ef-search takes values from 1 to 1000, like 40,100,200, got {args.ef_search!r}")
    if problems:
        parser.error("; ".join(problems))
    uniform = 0 if args.no_uniform else (args.vectors if args.uniform_vectors is None else args.uniform_vectors)
    return VectorConfig(
        vectors=args.vectors,
        dimension=args.dimension,
        queries=args.queries,
        clusters=args.clusters,
        noise=args.noise,
        uniform_vectors=uniform,
        seed=args.seed,
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=concurrency,
        ef_search=ef_search,
        database_url=args.database_url,
        json_only=args.json_only,
        install=args.install,
        start_timeout_s=args.start_timeout,
    )


# ---- synthetic data -------------------------------------------------------------------------------------------

Sampler = Callable[[], list[float]]


def clustered(rng: random.Random, dimension: int, clusters: int, noise: float) -> Sampler:
    """Points around Gaussian cluster centres, so that a point's nearest neighbours are its cluster's, as in
    real embeddings: uniform data has no near neighbours to find, and no recall figure on it means much."""
    gauss = rng.gauss
    centres = [[gauss(0.0, 1.0) for _ in range(dimension)] for _ in range(clusters)]

    def sample() -> list[float]:
        return [value + gauss(0.0, noise) for value in rng.choice(centres)]

    return sample


def uniform(rng: random.Random, dimension: int) -> Sampler:
    """Points uniform in the cube [-1, 1]^dimension (centred, so that cosine distances spread)."""
    draw = rng.random
    return lambda: [2.0 * draw() - 1.0 for _ in range(dimension)]


def tagged(rng: random.Random, count: int) -> list[list[str]]:
    """Each item's tags: ``p1`` on exactly 1 % of the items and ``p10`` on 10 %, drawn independently of the
    clusters, so a filter keeps that share of every neighbourhood."""
    tags: list[list[str]] = [[] for _ in range(count)]
    for tag, share in SELECTIVE_TAGS.items():
        for index in rng.sample(range(count), round(count * share)):
            tags[index].append(tag)
    return tags


def import_requests(name: str, sample: Sampler, count: int, rng: random.Random) -> list[pb.ImportEmbeddingsRequest]:
    """The whole ImportEmbeddings stream, built before the call so that generating it is not timed as load."""
    tags = tagged(rng, count)
    requests = []
    for start in range(0, count, IMPORT_BATCH):
        embeddings = [
            pb.Embedding(id=str(uuid.UUID(int=index + 1)), vector=sample(), tags=tags[index])
            for index in range(start, min(start + IMPORT_BATCH, count))
        ]
        requests.append(pb.ImportEmbeddingsRequest(collection=name if start == 0 else "", embeddings=embeddings))
    return requests


# ---- calls to the service -------------------------------------------------------------------------------------


def search_request(
    name: str, vector: Sequence[float], *, ef_search: int = 0, exact: bool = False, tag: str | None = None
) -> pb.SearchEmbeddingsRequest:
    """A top-10 search; ef_search 0 leaves the server's default."""
    return pb.SearchEmbeddingsRequest(
        collection=name,
        vector=pb.Vector(values=vector),
        top_k=TOP_K,
        filter=pb.EmbeddingFilter(all_tags=[tag] if tag else []),
        params=pb.SearchParams(ef_search=ef_search, exact=exact),
    )


async def search_all(
    stub: pb_grpc.EmbeddingServiceStub, requests: Iterable[pb.SearchEmbeddingsRequest]
) -> list[pb.SearchEmbeddingsResponse]:
    """Every request's answer, in order, a few in flight at a time."""
    gate = asyncio.Semaphore(RECALL_CONCURRENCY)

    async def one(request: pb.SearchEmbeddingsRequest) -> pb.SearchEmbeddingsResponse:
        async with gate:
            response: pb.SearchEmbeddingsResponse = await stub.SearchEmbeddings(request, timeout=120)
            return response

    return await asyncio.gather(*(one(request) for request in requests))


def recall(found: Sequence[pb.SearchEmbeddingsResponse], truth: Sequence[pb.SearchEmbeddingsResponse]) -> float:
    """Mean over queries of the share of the exact top-k that the search returned."""
    shares = []
    for answer, exact in zip(found, truth, strict=True):
        expected = {hit.id for hit in exact.results}
        if expected:
            shares.append(len(expected & {hit.id for hit in answer.results}) / len(expected))
    return sum(shares) / len(shares) if shares else 0.0


@dataclass(frozen=True)
class Collection:
    """A collection the run created: its name and the id that names its table (the etag)."""

    name: str
    id: int

    @property
    def table(self) -> str:
        return f"embeddings.collection_{self.id:d}"


async def create_collection(stub: pb_grpc.EmbeddingServiceStub, name: str, dimension: int) -> Collection:
    """Cosine, with the default HNSW parameters (m 16, ef_construction 64)."""
    response = await stub.CreateCollection(
        pb.CreateCollectionRequest(
            collection=pb.Collection(
                name=name, dimension=dimension, distance_metric=pb.DISTANCE_METRIC_COSINE
            )
        ),
        timeout=60,
    )
    return Collection(name, int(response.collection.etag))


async def load(stub: pb_grpc.EmbeddingServiceStub, requests: list[pb.ImportEmbeddingsRequest]) -> dict[str, Any]:
    """One ImportEmbeddings call over the prepared stream; its wall time includes the index build at its end."""
    started = time.perf_counter()
    response = await stub.ImportEmbeddings(iter(requests), timeout=3600)
    elapsed = time.perf_counter() - started
    return {
        "vectors": response.upserted_count,
        "import_s": round(elapsed, 2),
        "vectors_per_s": round(response.upserted_count / elapsed, 1),
        "index_rebuilt": response.index_rebuilt,
    }


# ---- direct SQL -----------------------------------------------------------------------------------------------


async def index_figures(dsn: str, collection: Collection) -> dict[str, Any]:
    """Time a REINDEX of the HNSW index with the memory the service's import builds it with, then its size.

    ANALYZE follows, as autovacuum would shortly after a load, so that the plans of the measured searches do
    not depend on when autovacuum got to the new table.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '512MB'")
        started = time.perf_counter()
        await conn.execute(f"REINDEX INDEX {collection.table}_hnsw", timeout=3600)
        build_s = time.perf_counter() - started
        await conn.execute(f"ANALYZE {collection.table}", timeout=600)
        index_bytes, table_bytes, workers = await conn.fetchrow(
            "SELECT pg_relation_size($1::regclass), pg_table_size($2::regclass),"
            " current_setting('max_parallel_maintenance_workers')::int",
            f"{collection.table}_hnsw",
            collection.table,
        )
    finally:
        await conn.close()
    return {
        "hnsw_build_s": round(build_s, 2),
        "maintenance_work_mem": "512MB",
        "max_parallel_maintenance_workers": workers,
        "index_mib": round(index_bytes / 2**20, 1),
        "table_mib": round(table_bytes / 2**20, 1),
    }


@dataclass(frozen=True)
class SqlLoad:
    """A closed-loop load on an asyncpg pool: ``workers`` coroutines, each one query after another."""

    pool: asyncpg.Pool
    statements: list[SearchStatement]

    async def run(self, workers: int, duration_s: float) -> tuple[int, float, list[float]]:
        """Queries answered, seconds from the first start to the last answer, sorted latencies in ms."""
        latencies: list[float] = []
        started = time.perf_counter()
        deadline = started + duration_s

        async def worker(index: int) -> None:
            statement = self.statements[index % len(self.statements)]
            while time.perf_counter() < deadline:
                begun = time.perf_counter()
                await self.pool.fetch(statement.sql, *statement.args)
                latencies.append((time.perf_counter() - begun) * 1000)

        await asyncio.gather(*(worker(index) for index in range(workers)))
        return len(latencies), time.perf_counter() - started, sorted(latencies)

    async def measure(self, workers: int, warmup_s: float, duration_s: float) -> dict[str, Any]:
        await self.run(workers, warmup_s)
        count, elapsed, latencies = await self.run(workers, duration_s)
        return {
            "queries": count,
            "elapsed_s": round(elapsed, 3),
            "qps": round(count / elapsed, 1),
            "p50_ms": _rounded(nearest_rank(latencies, 0.50)),
            "p99_ms": _rounded(nearest_rank(latencies, 0.99)),
        }


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# ---- the run --------------------------------------------------------------------------------------------------


class VectorRun:
    """One run: the service (through bench/run.py's Runner, whose load and count check it reuses), the
    service's DSN and settings, and the results as they come."""

    def __init__(self, config: VectorConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        # The unary bench's runner starts the service, warms and measures a load and checks its count.
        flags = ["--duration", str(config.duration_s), "--warmup", str(config.warmup_s)]
        flags += ["--start-timeout", str(config.start_timeout_s)]
        flags += ["--json-only"] if config.json_only else []
        flags += ["--database-url", config.database_url] if config.database_url else []
        self.runner = Runner(bench_config.parse_config(flags), [], ensure_tools(install=config.install), workdir)
        self.rng = random.Random(config.seed)
        self.run_id = uuid.uuid4().hex[:12]
        self.collections: list[Collection] = []
        self.document: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    @property
    def service(self) -> ServerProcess:
        return self.runner.servers["service"]

    async def start(self) -> tuple[str, Settings]:
        """The service, ready; then its DSN and the settings it read (pool size, scan budget)."""
        self.runner.say(f"starting the service (work directory {self.workdir})")
        service = await self.runner.start_service("service", UNCACHED_MODE, self.config.database_url)
        self.runner.servers["service"] = service
        dsn = await database_dsn(self.config.database_url, self.runner.pgdata)
        env = service_env(
            os.environ,
            grpc_port=self.service.grpc_port,
            metrics_port=self.service.metrics_port,
            database_url=dsn,
            cache=UNCACHED_MODE.env,
            extra={},
        )
        return dsn, Settings.from_env(env)

    async def timed(self, label: str, step: Awaitable[Any]) -> Any:
        """Await step, adding its seconds to timings[label]."""
        started = time.perf_counter()
        result = await step
        self._add_time(label, started)
        return result

    def generate(self, label: str, build: Callable[[], Any]) -> Any:
        """Run build (data generation, which blocks), adding its seconds to timings[label]."""
        started = time.perf_counter()
        result = build()
        self._add_time(label, started)
        return result

    def _add_time(self, label: str, started: float) -> None:
        self.timings[label] = round(self.timings.get(label, 0.0) + time.perf_counter() - started, 1)

    async def new_collection(self, stub: pb_grpc.EmbeddingServiceStub, kind: str) -> Collection:
        collection = await create_collection(stub, f"bench_{kind}_{self.run_id}", self.config.dimension)
        self.collections.append(collection)
        return collection

    async def run(self) -> None:
        started = time.perf_counter()
        dsn, settings = await self.timed("start_s", self.start())
        async with grpc.aio.insecure_channel(
            self.service.target, options=[("grpc.max_receive_message_length", 64 * 2**20)]
        ) as channel:
            stub = pb_grpc.EmbeddingServiceStub(channel)
            try:
                self.document["clustered"] = await self.clustered(stub, dsn, settings)
                if self.config.uniform_vectors:
                    self.document["uniform"] = await self.uniform(stub)
            finally:
                for collection in self.collections:
                    await stub.DeleteCollection(pb.DeleteCollectionRequest(name=collection.name), timeout=120)
        self.timings["total_s"] = round(time.perf_counter() - started, 1)

    async def clustered(self, stub: pb_grpc.EmbeddingServiceStub, dsn: str, settings: Settings) -> dict[str, Any]:
        config = self.config
        sample = clustered(self.rng, config.dimension, config.clusters, config.noise)
        collection = await self.new_collection(stub, "clustered")
        requests = self.generate(
            "generate_s", lambda: import_requests(collection.name, sample, config.vectors, self.rng)
        )
        queries = self.generate("generate_s", lambda: [sample() for _ in range(config.queries)])
        self.runner.say(f"loading {config.vectors} clustered vectors of {config.dimension} dimensions")
        loaded = await self.timed("load_s", load(stub, requests))
        del requests
        self.runner.say("timing the HNSW build (REINDEX)")
        index = await self.timed("reindex_s", index_figures(dsn, collection))
        self.runner.say(f"exact top-{TOP_K} of {config.queries} queries")
        truth = await self.timed(
            "exact_s", search_all(stub, (search_request(collection.name, q, exact=True) for q in queries))
        )
        pool = await create_pool(dsn, settings)
        try:
            rows = [await self.ef_row(stub, collection, queries, truth, pool, settings, ef) for ef in config.ef_search]
        finally:
            await pool.close()
        filtered = [await self.filtered_row(stub, collection, queries, tag) for tag in SELECTIVE_TAGS]
        return {
            "collection": {"vectors": config.vectors, "dimension": config.dimension, "metric": "cosine",
                           "hnsw_m": 16, "hnsw_ef_construction": 64},
            "load": loaded,
            "index": index,
            "ef_search": rows,
            "filtered": filtered,
        }

    async def ef_row(
        self,
        stub: pb_grpc.EmbeddingServiceStub,
        collection: Collection,
        queries: list[list[float]],
        truth: list[pb.SearchEmbeddingsResponse],
        pool: asyncpg.Pool,
        settings: Settings,
        ef: int,
    ) -> dict[str, Any]:
        """Recall at ef, then the same searches' QPS over gRPC (h2load) and directly in SQL, back to back."""
        found = await search_all(stub, (search_request(collection.name, q, ef_search=ef) for q in queries))
        keys = queries[: min(self.config.concurrency.connections, len(queries))]
        grpc_figures = await self.grpc_load(collection, keys, ef)
        self.runner.say(f"ef_search {ef}: SQL load with {self.config.concurrency.in_flight} workers")
        # The statements the service itself runs for these searches (server/store/embeddings.py).
        searched = StoredCollection(
            name=collection.name,
            dimension=self.config.dimension,
            metric=DistanceMetric.COSINE,
            half_precision=False,
            hnsw_m=16,
            hnsw_ef_construction=64,
            id=collection.id,
            created_at=datetime.now(UTC),
        )
        params = SearchParams(exact=False, ef_search=ef, scan_budget=settings.embedding_scan_budget)
        sql = SqlLoad(
            pool,
            [search_statement(searched, Query(key, TOP_K, EmbeddingFilter(), params)) for key in keys],
        )
        sql_figures = await sql.measure(self.config.concurrency.in_flight, self.config.warmup_s, self.config.duration_s)
        row = {
            "ef_search": ef,
            "recall_at_10": round(recall(found, truth), 4),
            "grpc": grpc_figures,
            "sql": sql_figures,
            "grpc_to_sql_qps": round(grpc_figures["qps"] / sql_figures["qps"], 3) if sql_figures["qps"] else None,
        }
        self.runner.say(
            f"ef_search {ef}: recall@10 {row['recall_at_10']:.3f}, gRPC {grpc_figures['qps']:.0f} QPS, "
            f"SQL {sql_figures['qps']:.0f} QPS, ratio {row['grpc_to_sql_qps']}"
        )
        return row

    async def grpc_load(self, collection: Collection, keys: list[list[float]], ef: int) -> dict[str, Any]:
        """SearchEmbeddings under h2load, one query vector per h2load process, through the unary bench's
        preflight, warm-up and count-checked measurement."""
        name = f"SearchEmbeddings-ef{ef}"
        messages = [search_request(collection.name, key, ef_search=ef).SerializeToString() for key in keys]
        frames = write_frames(self.workdir / "frames", name, messages)
        path: BenchPath[None] = BenchPath(name, SEARCH, _PREBUILT, lambda _data, _count: messages)
        target = Target(path, self.service, frames)
        await self.runner.preflight([target])
        requests = await self.runner.warm_up(target, self.config.concurrency)
        measured = await self.runner.measure(target, self.config.concurrency, requests, 1)
        return {
            "concurrency": measured.concurrency,
            "requests": measured.requests,
            "succeeded": measured.succeeded,
            "server_ok": measured.server_ok,
            "count_check": "passed",  # Runner.measure raised otherwise
            "elapsed_s": round(measured.elapsed_s, 3),
            "qps": round(measured.rps, 1),
            "p50_ms": _rounded(measured.p50_ms),
            "p99_ms": _rounded(measured.p99_ms),
            "server_cpu_us_per_call": _rounded(measured.server_cpu_us_per_call, 0),
            "postgres_cpu_us_per_call": _rounded(measured.postgres_cpu_us_per_call, 0),
        }

    async def filtered_row(
        self, stub: pb_grpc.EmbeddingServiceStub, collection: Collection, queries: list[list[float]], tag: str
    ) -> dict[str, Any]:
        """Recall of a tag-filtered search at the server's default ef_search against the exact filtered top-10."""
        truth = await search_all(stub, (search_request(collection.name, q, exact=True, tag=tag) for q in queries))
        found = await search_all(stub, (search_request(collection.name, q, tag=tag) for q in queries))
        row = {
            "filter": f"all_tags={tag}",
            "selectivity": SELECTIVE_TAGS[tag],
            "ef_search": "server default",
            "recall_at_10": round(recall(found, truth), 4),
            "full_results": round(sum(len(answer.results) == TOP_K for answer in found) / len(found), 4),
            "truncated": sum(answer.truncated for answer in found),
        }
        self.runner.say(
            f"filter {tag}: recall@10 {row['recall_at_10']:.3f}, {row['full_results']:.1%} full, "
            f"{row['truncated']} truncated"
        )
        return row

    async def uniform(self, stub: pb_grpc.EmbeddingServiceStub) -> dict[str, Any]:
        config = self.config
        sample = uniform(self.rng, config.dimension)
        collection = await self.new_collection(stub, "uniform")
        requests = self.generate(
            "generate_s", lambda: import_requests(collection.name, sample, config.uniform_vectors, self.rng)
        )
        queries = self.generate("generate_s", lambda: [sample() for _ in range(config.queries)])
        self.runner.say(f"loading {config.uniform_vectors} uniform vectors")
        loaded = await self.timed("load_s", load(stub, requests))
        del requests
        truth = await self.timed(
            "exact_s", search_all(stub, (search_request(collection.name, q, exact=True) for q in queries))
        )
        rows = []
        for ef in config.ef_search:
            found = await search_all(stub, (search_request(collection.name, q, ef_search=ef) for q in queries))
            rows.append({"ef_search": ef, "recall_at_10": round(recall(found, truth), 4)})
        return {
            "note": "uniform random vectors have no meaningful neighbourhoods: no basis for a recall goal",
            "vectors": config.uniform_vectors,
            "load": loaded,
            "ef_search": rows,
        }


async def _never_seeded(context: SeedContext) -> None:
    """The search frames are built from the run's own query vectors; nothing is seeded through bench/paths."""


_PREBUILT: Seed[None] = Seed("prebuilt", _never_seeded)


def targets(clustered_result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each target with its figure and whether it is met; empty when the clustered part did not finish."""
    if not clustered_result:
        return []
    by_ef = {row["ef_search"]: row for row in clustered_result["ef_search"]}
    default = by_ef.get(DEFAULT_EF)
    p1 = next(row for row in clustered_result["filtered"] if row["filter"] == "all_tags=p1")
    checks = [
        ("recall@10 at the default ef_search (100), clustered", f">= {TARGET_RECALL}",
         default and default["recall_at_10"], default and default["recall_at_10"] >= TARGET_RECALL),
        ("gRPC QPS / direct SQL QPS at the default ef_search", f">= {TARGET_QPS_RATIO}",
         default and default["grpc_to_sql_qps"],
         default and (default["grpc_to_sql_qps"] or 0) >= TARGET_QPS_RATIO),
        ("filtered 1 %: every search returns 10 results", "1.0", p1["full_results"], p1["full_results"] == 1.0),
        ("filtered 1 %: recall@10", f">= {TARGET_FILTERED_RECALL}", p1["recall_at_10"],
         p1["recall_at_10"] >= TARGET_FILTERED_RECALL),
    ]
    return [
        {"target": what, "goal": goal, "figure": figure, "met": bool(met) if figure is not None else None}
        for what, goal, figure, met in checks
    ]


def table(document: dict[str, Any]) -> str:
    """The human-readable summary of the JSON."""
    lines = []
    result = document.get("clustered")
    if result:
        load_, index = result["load"], result["index"]
        lines += [
            f"clustered: {load_['vectors']} vectors loaded in {load_['import_s']} s ({load_['vectors_per_s']:.0f}/s, "
            f"index_rebuilt {load_['index_rebuilt']}); HNSW REINDEX {index['hnsw_build_s']} s; "
            f"index {index['index_mib']} MiB, table {index['table_mib']} MiB",
            "",
            "| ef_search | recall@10 | gRPC QPS | p50 / p99 ms | SQL QPS | p50 / p99 ms | gRPC/SQL |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in result["ef_search"]:
            g, s = row["grpc"], row["sql"]
            lines.append(
                f"| {row['ef_search']} | {row['recall_at_10']:.3f} | {g['qps']:.0f} | {g['p50_ms']} / {g['p99_ms']} "
                f"| {s['qps']:.0f} | {s['p50_ms']} / {s['p99_ms']} | {row['grpc_to_sql_qps']} |"
            )
        lines += ["", "| filter | recall@10 | full results | truncated |", "|---|---|---|---|"]
        for row in result["filtered"]:
            lines.append(
                f"| {row['filter']} | {row['recall_at_10']:.3f} | {row['full_results']:.1%} | {row['truncated']} |"
            )
    if document.get("uniform"):
        rows = document["uniform"]["ef_search"]
        recalls = ", ".join(f"ef {row['ef_search']}: {row['recall_at_10']:.3f}" for row in rows)
        lines += ["", f"uniform (no basis for a recall goal): recall@10 {recalls}"]
    for target in document["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        lines.append(f"target {target['target']} {target['goal']}: {target['figure']} — {verdict}")
    return "\n".join(lines)


def _parameters(config: VectorConfig) -> dict[str, Any]:
    return {
        "vectors": config.vectors,
        "dimension": config.dimension,
        "queries": config.queries,
        "clusters": config.clusters,
        "noise": config.noise,
        "uniform_vectors": config.uniform_vectors,
        "seed": config.seed,
        "duration_s": config.duration_s,
        "warmup_s": config.warmup_s,
        "concurrency": config.concurrency.label,
        "ef_search": list(config.ef_search),
        "top_k": TOP_K,
        "filters": {f"all_tags={tag}": share for tag, share in SELECTIVE_TAGS.items()},
        "database": mask_url(config.database_url) if config.database_url else "embedded",
    }


async def _run(config: VectorConfig) -> tuple[dict[str, Any], int]:
    workdir = Path(tempfile.mkdtemp(prefix="dataservice-bench-vectors-"))
    run: VectorRun | None = None
    error: BenchFailure | None = None
    try:
        run = VectorRun(config, workdir)
        await run.run()
    except BenchFailure as failure:
        error = failure
    except (ToolError, ServerError, grpc.aio.AioRpcError, asyncpg.PostgresError, OSError) as failure:
        if isinstance(failure, grpc.aio.AioRpcError):
            text = f"{failure.code().name}: {failure.details()}"
        else:
            text = str(failure)
        error = BenchFailure(f"setup failed: {text}", EXIT_SETUP)
    finally:
        if run is not None:
            await run.runner.stop_servers()
    results = run.document if run else {}
    document = {
        "benchmark": "dataservice EmbeddingService: load, HNSW build, recall@10, search QPS over gRPC vs direct SQL",
        "ok": error is None,
        "error": str(error) if error else None,
        "parameters": _parameters(config),
        "environment": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "h2load": run.runner.tools.version if run else None,
            "python": platform.python_version(),
            "grpcio": _version("grpcio"),
            "asyncpg": _version("asyncpg"),
            "cpus": os.cpu_count(),
        },
        "clustered": results.get("clustered"),
        "uniform": results.get("uniform"),
        "targets": targets(results.get("clustered")),
        "timings": run.timings if run else {},
        "workdir": str(workdir) if error else None,
    }
    if error is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return document, error.exit_status if error else 0


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    document, status = uvloop.run(_run(config))
    print(json.dumps(document, indent=2, ensure_ascii=False), flush=True)
    if not config.json_only:
        print("\n" + table(document), file=sys.stderr)
    if document["error"]:
        print(f"FAILED: {document['error']} (logs in {document['workdir']})", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
