"""The benchmark runner, run for a moment: its JSON has the documented shape (every path, each cached one in
every mode, two workers included, and the cross-replica staleness probe), and its count check (h2load's ``succeeded`` against
the server's own OK count) fails the run when the server answers errors.

These tests check the harness, never speed: timed assertions on a shared machine would be flaky.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.metrics import histogram_quantile
from bench.modes import parse_modes
from bench.paths import select_paths
from tests.harness import REPO

# fmt: off
QUICK = [
    "--duration", "0.5", "--warmup", "0.3", "--rounds", "1", "--concurrency", "2x4", "--json-only",
    "--users", "8", "--sessions", "8", "--contents", "120",  # seeds small enough to take a second
    "--staleness-rounds", "10",
]
# fmt: on
BASELINES = ("echo", "reference")
CACHED_PATHS = ("GetUser", "LookupUser", "GetSession", "GetContent", "BatchGetContents")
UNCACHED_PATHS = ("ListContents", "SearchContents")
REDIS_MODES = ("redis-cold", "redis", "near")
MODES = (*REDIS_MODES, "2-workers")  # besides uncached, the plain name
ROWS = (
    *(row for path in CACHED_PATHS for row in (path, *(f"{path}[{mode}]" for mode in MODES))),
    *UNCACHED_PATHS,
)
COUNT_CHECK_FAILED = 4  # the runner's documented exit status


async def run_bench(database_url: str, workdir: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", *QUICK, "--database-url", database_url, "--workdir", str(workdir), *args,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode is not None
    return process.returncode, json.loads(stdout), stderr.decode()


async def test_a_short_run_reports_every_path_in_every_mode_and_the_staleness_probe(database_url, tmp_path):
    status, document, log = await run_bench(database_url, tmp_path)
    assert status == 0, log
    assert document["ok"] is True and document["error"] is None
    assert list(document["parameters"]["paths"]) == [*BASELINES, *ROWS], "the baselines come first"
    assert document["servers"].keys() == {
        "echo", "reference", "service", "service-redis-cold", "service-redis", "service-near", "service-near-b",
        "service-2-workers", "redis",
    }
    [result] = document["results"]
    assert result["concurrency"] == "2x4"
    for name in (*BASELINES, *ROWS):
        path = result["paths"][name]
        [measured] = path["rounds"]
        assert measured["succeeded"] == measured["server_ok"] > 0, f"{name}: the count check compared real counts"
        assert measured["failed"] == measured["errored"] == 0
        for key in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_call"):
            assert path["median"][key] > 0
        assert set(path["vs_echo"]) == {"rps", "p50_ms", "server_cpu_us_per_call"}
        assert path["vs_reference"]["rps"] > 0
    assert result["paths"]["echo"]["vs_echo"]["rps"] == 1.0
    reference = result["paths"]["reference"]
    assert (reference["server"], reference["method"]) == ("reference", "/dataservice.v1.UserService/GetUser")
    assert reference["vs_reference"]["rps"] == 1.0
    batch = result["paths"]["BatchGetContents"]
    assert batch["items_per_call"] == 100
    assert batch["items_per_s"] == round(batch["median"]["rps"] * 100, 1)
    assert batch["vs_reference"]["items_per_s"] > 0
    assert "items_per_s" not in result["paths"]["GetContent"], "a point read is one item per call"
    for path in CACHED_PATHS:
        assert "vs_uncached" not in result["paths"][path]
        for mode in MODES:
            row = result["paths"][f"{path}[{mode}]"]
            assert (row["server"], row["cache_mode"]) == (f"service-{mode}", mode)
            assert row["vs_uncached"]["rps"] > 0
            charged = row["median"]["redis_cpu_us_per_call"] is not None
            assert charged is (mode in REDIS_MODES), "a Redis mode, and only one, is charged the Redis CPU"
    assert result["paths"]["BatchGetContents[near]"]["items_per_s"] > 0
    assert result["paths"]["GetUser"]["median"]["redis_cpu_us_per_call"] is None
    staleness = document["staleness"]
    assert (staleness["writer"], staleness["reader"], staleness["rounds"]) == ("service-near", "service-near-b", 10)
    assert staleness["never_fresh"] == 0 and staleness["delay_ms"]["max"] >= staleness["delay_ms"]["p50"] > 0
    load = staleness["load"]
    assert load["succeeded"] > 0 and load["failed"] == load["errored"] == load["server_not_ok"] == 0
    assert staleness["invalidation_lag_ms"] is None or staleness["invalidation_lag_ms"]["count"] >= 0


async def test_the_count_check_fails_the_run_when_the_server_answers_errors(database_url, tmp_path):
    """A method that does not exist answers HTTP 200 with grpc-status 12: h2load counts it as a success."""
    status, document, log = await run_bench(
        database_url, tmp_path,
        "--only", "Missing", "--path", "Missing=/dataservice.v1.UserService/NoSuchMethod", "--no-preflight",
        "--cache-modes", "uncached",
    )
    assert status == COUNT_CHECK_FAILED, log
    assert document["ok"] is False
    assert "count check failed" in document["error"] and "0 OK" in document["error"]


def test_cached_paths_get_one_row_per_mode_and_the_others_stay_uncached():
    rows = select_paths(("GetUser", "ListContents"), {}, parse_modes(["near", "uncached"]))
    assert [(row.name, row.server, row.uncached_row) for row in rows] == [
        ("echo", "echo", None),
        ("reference", "reference", None),
        ("GetUser", "service", None),
        ("GetUser[near]", "service-near", "GetUser"),
        ("ListContents", "service", None),
    ]


def test_histogram_quantiles_interpolate_within_the_bucket_the_rank_falls_in():
    buckets = [(0.001, 50.0), (0.01, 90.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == 0.001
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.001 + 0.009 * 0.5)
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
