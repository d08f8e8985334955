"""The benchmark runner, run for a moment: its JSON has the documented shape, and its count check (h2load's
``succeeded`` against the server's own OK count) fails the run when the server answers errors.

These tests check the harness, never speed: timed assertions on a shared machine would be flaky.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tests.harness import REPO

# fmt: off
QUICK = [
    "--duration", "0.5", "--warmup", "0.3", "--rounds", "1", "--concurrency", "2x4", "--json-only",
    "--users", "8", "--sessions", "8", "--contents", "120",  # seeds small enough to take a second
]
# fmt: on
BASELINES = ("echo", "reference")
SERVICE_PATHS = (
    "GetUser", "LookupUser", "GetSession", "GetContent", "BatchGetContents", "ListContents", "SearchContents"
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


async def test_a_short_run_reports_every_path_against_the_echo_and_the_reference(database_url, tmp_path):
    status, document, log = await run_bench(database_url, tmp_path)
    assert status == 0, log
    assert document["ok"] is True and document["error"] is None
    assert list(document["parameters"]["paths"]) == [*BASELINES, *SERVICE_PATHS], "the baselines come first"
    assert document["servers"].keys() == {"echo", "reference", "service"}
    [result] = document["results"]
    assert result["concurrency"] == "2x4"
    for name in (*BASELINES, *SERVICE_PATHS):
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


async def test_the_count_check_fails_the_run_when_the_server_answers_errors(database_url, tmp_path):
    """A method that does not exist answers HTTP 200 with grpc-status 12: h2load counts it as a success."""
    status, document, log = await run_bench(
        database_url, tmp_path,
        "--only", "Missing", "--path", "Missing=/dataservice.v1.UserService/NoSuchMethod", "--no-preflight",
    )
    assert status == COUNT_CHECK_FAILED, log
    assert document["ok"] is False
    assert "count check failed" in document["error"] and "0 OK" in document["error"]
