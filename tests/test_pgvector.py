"""pgvector on the PostgreSQL under test: a broken build (e.g. compiled for CPU features this machine lacks,
which crashes the server with SIGILL at the first distance query) must fail here, at once."""

from __future__ import annotations

import random

import asyncpg
import pytest

pytestmark = pytest.mark.pgvector


async def test_hnsw_index_answers_a_distance_query_like_an_exact_scan(new_database):
    conn = await asyncpg.connect(await new_database())
    try:
        await conn.execute("CREATE EXTENSION vector")
        await conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(8))")
        rng = random.Random(7)
        rows = [(i, str([rng.uniform(-1, 1) for _ in range(8)])) for i in range(500)]
        await conn.executemany("INSERT INTO items VALUES ($1, $2::vector)", rows)
        await conn.execute("CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops)")
        query = str([rng.uniform(-1, 1) for _ in range(8)])
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            await conn.execute("SET LOCAL hnsw.ef_search = 200")
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN SELECT id FROM items ORDER BY embedding <=> $1::vector LIMIT 5", query))
            approximate = [r["id"] for r in await conn.fetch(
                "SELECT id FROM items ORDER BY embedding <=> $1::vector LIMIT 5", query)]
        exact = [r["id"] for r in await conn.fetch(
            "SELECT id FROM items ORDER BY (embedding <=> $1::vector) + 0 LIMIT 5", query)]
    finally:
        await conn.close()
    assert "hnsw" in plan.lower() or "items_embedding_idx" in plan
    assert approximate == exact
