"""The vector benchmark, run for a moment on a tiny data set: its JSON has the documented shape (load and index
figures, one row per ef_search with recall, gRPC and SQL throughput and their ratio, the filtered rows, the
targets) and its count check compared real counts.

These tests check the harness, never speed or recall: figures on a tiny set and a shared machine mean nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.pgvector

# fmt: off
QUICK = [
    "--vectors", "2000", "--dimension", "16", "--queries", "20", "--clusters", "10",
    "--duration", "0.5", "--warmup", "0.3", "--concurrency", "2x4", "--ef-search", "40,100",
    "--json-only",
]
# fmt: on


async def run_vectors(database_url: str, *args: str) -> tuple[int, dict[str, Any], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.vectors", *QUICK, "--database-url", database_url, *args,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=100)
    assert process.returncode is not None
    return process.returncode, json.loads(stdout), stderr.decode()


async def test_a_tiny_run_reports_load_recall_and_grpc_beside_sql_per_ef_search(database_url):
    status, document, log = await run_vectors(database_url, "--no-uniform")
    assert status == 0, log
    assert document["ok"] is True and document["error"] is None
    assert document["parameters"]["ef_search"] == [40, 100]
    assert document["uniform"] is None
    clustered = document["clustered"]
    load = clustered["load"]
    assert load["vectors"] == 2000 and load["vectors_per_s"] > 0 and load["index_rebuilt"] is True
    index = clustered["index"]
    assert index["hnsw_build_s"] > 0 and index["index_mib"] > 0 and index["table_mib"] > 0
    assert [row["ef_search"] for row in clustered["ef_search"]] == [40, 100]
    for row in clustered["ef_search"]:
        assert 0 < row["recall_at_10"] <= 1
        grpc, sql = row["grpc"], row["sql"]
        assert grpc["count_check"] == "passed"
        assert grpc["succeeded"] == grpc["server_ok"] > 0, "the count check compared real counts"
        assert grpc["qps"] > 0 and grpc["p99_ms"] >= grpc["p50_ms"] > 0
        assert sql["queries"] > 0 and sql["qps"] > 0 and sql["p99_ms"] >= sql["p50_ms"] > 0
        assert row["grpc_to_sql_qps"] == round(grpc["qps"] / sql["qps"], 3)
    assert [row["filter"] for row in clustered["filtered"]] == ["all_tags=p1", "all_tags=p10"]
    for row in clustered["filtered"]:
        assert 0 < row["recall_at_10"] <= 1 and 0 <= row["full_results"] <= 1 and row["truncated"] >= 0
    assert len(document["targets"]) == 4
    assert all(target["met"] in (True, False) for target in document["targets"])


async def test_the_uniform_set_reports_recall_only(database_url):
    status, document, log = await run_vectors(database_url, "--uniform-vectors", "500", "--ef-search", "40")
    assert status == 0, log
    uniform = document["uniform"]
    assert uniform["vectors"] == 500 and uniform["load"]["vectors"] == 500
    assert [row["ef_search"] for row in uniform["ef_search"]] == [40]
    assert "no basis for a recall goal" in uniform["note"]
