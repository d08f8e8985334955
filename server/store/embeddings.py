"""SQL for embedding collections and their items.

Each collection keeps its embeddings in a table of its own, ``embeddings.collection_<id>``, whose vector column
has the collection's type and dimension (``vector(384)``, ``halfvec(3072)``) and carries the collection's own
HNSW index. Why a table per collection rather than one table with a partial index per collection: pgvector
indexes only columns of a fixed dimension, so one shared table would need an expression index per collection,
and the planner uses a partial index only when the query names the collection as a literal — a prepared
statement's generic plan, which asyncpg reuses, would fall back to a full scan. A table per collection also
keeps planner statistics, vacuum and the drop of a collection (one DROP TABLE) per collection. Its limit is
the catalogue: each collection costs a few relations, so the design suits tens to thousands of collections,
not millions (use metadata or tags to split data that finely).

Table and column types in the SQL below are built from the collection's stored id and dimension (integers)
and from the DistanceMetric enum, never from a request's text. A collection dropped by another replica after
its row was read surfaces as ``CollectionGone``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from server.db.database import Database
from server.domain.common import CreateRequest
from server.domain.embeddings import (
    Collection,
    DistanceMetric,
    Embedding,
    EmbeddingFilter,
    Hit,
    NewCollection,
    NewEmbedding,
    Query,
    SearchParams,
    SearchResult,
)
from server.errors import AlreadyExists, Conflict, FailedPrecondition, NotFound, RequestIdReused
from server.store.conditions import Conditions

# Transaction-level advisory locks of collection DDL: (class, hashtext(name)) serializes the creation and drop
# of one name across replicas without blocking other names.
_DDL_LOCK_CLASS = 0x656D6263  # "embc"
_COLLECTION_COLUMNS = (
    "id, name, dimension, distance_metric, half_precision, hnsw_m, hnsw_ef_construction, created_at"
)
# Vectors are read and written as pgvector's ``vector`` (server/db/pool.py's binary codec), cast from and to the
# collection's column type in SQL.
_EMBEDDING_COLUMNS = "id, vector::vector AS vector, content_id, metadata, tags, expire_at, created_at, updated_at"
_LIVE = "(expire_at IS NULL OR expire_at > now())"
# An upsert replaces every field of an existing id; one that had expired counts as new.
_REPLACE = """
    ON CONFLICT (id) DO UPDATE SET
        vector = excluded.vector, content_id = excluded.content_id, metadata = excluded.metadata,
        tags = excluded.tags, expire_at = excluded.expire_at,
        created_at = CASE WHEN e.expire_at <= now() THEN now() ELSE e.created_at END, updated_at = now()
"""
PGVECTOR_MISSING = "the pgvector extension is not installed in this database; install it to store embeddings"


class CollectionGone(NotFound):
    """The collection's table is gone: it was dropped after its row was read (by this or another replica)."""

    def __init__(self, name: str) -> None:
        super().__init__("Collection", name)


def table(collection: Collection) -> str:
    return f"embeddings.collection_{collection.id:d}"


def _collection(row: asyncpg.Record) -> Collection:
    return Collection(
        id=row["id"],
        name=row["name"],
        dimension=row["dimension"],
        metric=DistanceMetric.from_stored(row["distance_metric"]),
        half_precision=row["half_precision"],
        hnsw_m=row["hnsw_m"],
        hnsw_ef_construction=row["hnsw_ef_construction"],
        created_at=row["created_at"],
    )


def _hnsw_index(collection: Collection) -> str:
    return f"embeddings.collection_{collection.id:d}_hnsw"


def _hnsw_ddl(collection: Collection) -> str:
    kind = "halfvec" if collection.half_precision else "vector"
    return (
        f"CREATE INDEX {_hnsw_index(collection).split('.', 1)[1]} ON {table(collection)}"
        f" USING hnsw (vector {kind}_{collection.metric.opclass})"
        f" WITH (m = {collection.hnsw_m:d}, ef_construction = {collection.hnsw_ef_construction:d})"
    )


def _table_ddl(collection: Collection) -> str:
    name = table(collection)
    return f"""
        CREATE TABLE {name} (
            id         uuid        PRIMARY KEY,
            vector     {collection.vector_type} NOT NULL,
            -- Deleting content deletes the embeddings that stand for it.
            content_id uuid        REFERENCES contents (id) ON DELETE CASCADE,
            metadata   jsonb,      -- NULL when empty, which spares decoding it
            tags       text[]      NOT NULL DEFAULT '{{}}',
            expire_at  timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        {_hnsw_ddl(collection)};
        CREATE INDEX ON {name} (content_id) WHERE content_id IS NOT NULL;
        CREATE INDEX ON {name} (expire_at) WHERE expire_at IS NOT NULL;
    """


async def create_collection(db: Database, new: NewCollection, request: CreateRequest | None) -> Collection:
    """Inserts the collection and creates its table and index, in one transaction. With a request id already
    used by the same request, returns what that request created (AIP-155)."""
    async with db.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _DDL_LOCK_CLASS, new.name)
        if request is not None:
            row = await conn.fetchrow(
                f"SELECT {_COLLECTION_COLUMNS}, create_request_fingerprint FROM collections"
                " WHERE create_request_id = $1",
                request.id,
            )
            if row is not None:
                if bytes(row["create_request_fingerprint"]) != request.fingerprint:
                    raise RequestIdReused()
                return _collection(row)
        row = await conn.fetchrow(
            f"""
            INSERT INTO collections (name, dimension, distance_metric, half_precision, hnsw_m, hnsw_ef_construction,
                                     create_request_id, create_request_fingerprint)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (name) DO NOTHING
            RETURNING {_COLLECTION_COLUMNS}
            """,
            new.name,
            new.dimension,
            new.metric.stored,
            new.half_precision,
            new.hnsw_m,
            new.hnsw_ef_construction,
            request.id if request else None,
            request.fingerprint if request else None,
        )
        if row is None:
            raise AlreadyExists("Collection", new.name, f"a collection named {new.name!r} already exists")
        collection = _collection(row)
        try:
            await conn.execute(_table_ddl(collection))
        except (asyncpg.UndefinedObjectError, asyncpg.UndefinedFunctionError):
            raise FailedPrecondition(PGVECTOR_MISSING, reason="PGVECTOR_MISSING") from None
        return collection


async def get_collection(db: Database, name: str) -> Collection:
    row = await db.fetchrow(f"SELECT {_COLLECTION_COLUMNS} FROM collections WHERE name = $1", name, idempotent=True)
    if row is None:
        raise NotFound("Collection", name)
    return _collection(row)


async def list_collections(db: Database, *, after: str | None, limit: int) -> list[Collection]:
    """Collections by name, strictly after ``after``."""
    rows = await db.fetch(
        f"SELECT {_COLLECTION_COLUMNS} FROM collections WHERE $1::text IS NULL OR name > $1 ORDER BY name LIMIT $2",
        after,
        limit,
        idempotent=True,
    )
    return [_collection(row) for row in rows]


async def all_collections(db: Database) -> list[Collection]:
    rows = await db.fetch(f"SELECT {_COLLECTION_COLUMNS} FROM collections ORDER BY id", idempotent=True)
    return [_collection(row) for row in rows]


async def delete_collection(db: Database, name: str, *, expected_id: int | None) -> None:
    """Deletes the collection and drops its table. With ``expected_id`` (the etag), only that collection."""
    async with db.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _DDL_LOCK_CLASS, name)
        row = await conn.fetchrow(
            f"DELETE FROM collections WHERE name = $1 AND ($2::bigint IS NULL OR id = $2) RETURNING {_COLLECTION_COLUMNS}",
            name,
            expected_id,
        )
        if row is None:
            if await conn.fetchval("SELECT true FROM collections WHERE name = $1", name):
                raise Conflict("the collection was replaced since the etag was read; read it again and retry")
            raise NotFound("Collection", name)
        await conn.execute(f"DROP TABLE IF EXISTS {table(_collection(row))}")


async def upsert_embeddings(db: Database, collection: Collection, items: list[NewEmbedding]) -> int:
    """Writes ``items`` in one statement, each column as one array parameter.
    Raises NotFound naming a content id that names no content; then nothing is written."""
    content_ids = [item.content_id for item in items]
    try:
        return await db.fetchval(
            f"""
            WITH written AS (
                INSERT INTO {table(collection)} AS e (id, vector, content_id, metadata, tags, expire_at)
                SELECT i.id, i.vector::{collection.vector_type}, i.content_id, i.metadata::jsonb,
                       ARRAY(SELECT jsonb_array_elements_text(i.tags::jsonb)), i.expire_at
                FROM unnest($1::uuid[], $2::vector[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[])
                     AS i (id, vector, content_id, metadata, tags, expire_at)
                {_REPLACE}
                RETURNING 1)
            SELECT count(*) FROM written
            """,
            [item.id for item in items],
            # Tuples: asyncpg takes a list inside an array parameter for one more dimension, a tuple for a value.
            [tuple(item.vector) for item in items],
            content_ids,
            # JSON text, cast in SQL: asyncpg would take a list of tag lists for a two-dimensional array.
            [json.dumps(item.metadata) if item.metadata else None for item in items],
            [json.dumps(item.tags) for item in items],
            [item.expire_at for item in items],
        )
    except asyncpg.UndefinedTableError:
        raise CollectionGone(collection.name) from None
    except asyncpg.ForeignKeyViolationError:
        missing = await _unknown_contents(db, [cid for cid in content_ids if cid is not None])
        raise NotFound("Content", str(missing[0]) if missing else "") from None


@dataclass(frozen=True)
class Imported:
    count: int
    index_rebuilt: bool


async def import_embeddings(
    db: Database, collection: Collection, batches: AsyncIterator[list[NewEmbedding]], *, index_memory: str
) -> Imported:
    """Loads every batch in one transaction: each is copied (COPY) into a staging table as it arrives, and one
    statement upserts them all at the end. Into an empty collection the HNSW index is dropped first and built
    once after the load, with ``index_memory`` of maintenance_work_mem (a build that fits in memory is many
    times faster); the ACCESS EXCLUSIVE lock that takes makes other calls on the collection wait for the
    commit. Ids must be distinct across the batches."""
    name = table(collection)
    try:
        async with db.transaction() as conn:
            # Imports of one collection queue behind each other, and no write slips in between the check for
            # emptiness and the load; searches go on until the index is dropped.
            await conn.execute(f"LOCK TABLE {name} IN SHARE ROW EXCLUSIVE MODE")
            empty = not await conn.fetchval(f"SELECT EXISTS (SELECT FROM {name})")
            if empty:
                await conn.execute(f"DROP INDEX {_hnsw_index(collection)}")
            await conn.execute(
                "CREATE TEMPORARY TABLE embedding_import (id uuid, vector vector, content_id uuid, metadata text,"
                " tags text[], expire_at timestamptz) ON COMMIT DROP"
            )
            content_ids: set[UUID] = set()
            async for batch in batches:
                content_ids.update(item.content_id for item in batch if item.content_id is not None)
                await conn.copy_records_to_table(
                    "embedding_import",
                    records=[
                        (i.id, i.vector, i.content_id, json.dumps(i.metadata) if i.metadata else None, i.tags, i.expire_at)
                        for i in batch
                    ],
                    timeout=db.budget(),
                )
            try:
                count = await conn.fetchval(
                    f"""
                    WITH written AS (
                        INSERT INTO {name} AS e (id, vector, content_id, metadata, tags, expire_at)
                        SELECT id, vector::{collection.vector_type}, content_id, metadata::jsonb, tags, expire_at
                        FROM embedding_import
                        {_REPLACE}
                        RETURNING 1)
                    SELECT count(*) FROM written
                    """,
                    timeout=db.budget(),
                )
            except asyncpg.ForeignKeyViolationError:
                missing = await _unknown_contents(db, sorted(content_ids))
                raise NotFound("Content", str(missing[0]) if missing else "") from None
            if empty:
                # A text setting from configuration, checked at start; SET LOCAL takes no parameters.
                await conn.execute(f"SET LOCAL maintenance_work_mem = '{index_memory}'")
                await conn.execute(_hnsw_ddl(collection), timeout=db.budget())
            return Imported(count, index_rebuilt=empty)
    except asyncpg.UndefinedTableError:
        raise CollectionGone(collection.name) from None


async def _unknown_contents(db: Database, content_ids: list[UUID]) -> list[UUID]:
    rows = await db.fetch(
        "SELECT id FROM unnest($1::uuid[]) AS given (id) WHERE NOT EXISTS (SELECT FROM contents c WHERE c.id = given.id)",
        content_ids,
        idempotent=True,
    )
    return [row["id"] for row in rows]


def _embedding(row: asyncpg.Record) -> Embedding:
    return Embedding(
        id=row["id"],
        vector=row["vector"],
        content_id=row["content_id"],
        metadata=row["metadata"] or {},
        tags=row["tags"],
        expire_at=row["expire_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def get_embeddings(db: Database, collection: Collection, ids: list[UUID]) -> dict[UUID, Embedding]:
    """The live (unexpired) embeddings of ``ids``, in one query."""
    try:
        rows = await db.fetch(
            f"SELECT {_EMBEDDING_COLUMNS} FROM {table(collection)} WHERE id = ANY($1::uuid[]) AND {_LIVE}",
            ids,
            idempotent=True,
        )
    except asyncpg.UndefinedTableError:
        raise CollectionGone(collection.name) from None
    return {row["id"]: _embedding(row) for row in rows}


async def content_vectors(db: Database, collection: Collection, content_ids: list[UUID]) -> dict[UUID, list[float]]:
    """The vector of each content that has live embeddings in ``collection``: their mean, when it has several."""
    try:
        rows = await db.fetch(
            f"SELECT content_id, avg(vector)::vector AS vector FROM {table(collection)}"
            f" WHERE content_id = ANY($1::uuid[]) AND {_LIVE} GROUP BY content_id",
            content_ids,
            idempotent=True,
        )
    except asyncpg.UndefinedTableError:
        raise CollectionGone(collection.name) from None
    return {row["content_id"]: row["vector"] for row in rows}


async def delete_embeddings(db: Database, collection: Collection, ids: list[UUID]) -> int:
    try:
        return await db.fetchval(
            f"WITH deleted AS (DELETE FROM {table(collection)} WHERE id = ANY($1::uuid[]) AND {_LIVE} RETURNING 1)"
            " SELECT count(*) FROM deleted",
            ids,
        )
    except asyncpg.UndefinedTableError:
        raise CollectionGone(collection.name) from None


def _conditions(query: Query) -> Conditions:
    conditions = Conditions()
    conditions.add(_LIVE)
    where: EmbeddingFilter = query.where
    if where.metadata:
        conditions.add("metadata @> {}::jsonb", where.metadata)
    if where.all_tags:
        conditions.add("tags @> {}::text[]", where.all_tags)
    if where.any_tags:
        conditions.add("tags && {}::text[]", where.any_tags)
    if where.content_statuses:
        # A subquery per candidate row rather than a join, so that the plan stays an ordered scan of the index
        # that the iterative scan can continue.
        conditions.add(
            "(SELECT c.status FROM contents c WHERE c.id = e.content_id) = ANY({}::text[])",
            [status.value for status in where.content_statuses],
        )
    if query.excluded:
        conditions.add("id <> ALL({}::uuid[])", query.excluded)
    if query.excluded_contents:
        conditions.add("content_id <> ALL({}::uuid[])", query.excluded_contents)
    return conditions


@dataclass(frozen=True)
class SearchStatement:
    """A search as one SQL statement and its arguments, and the count of its matches (``count_sql`` takes
    ``count_args``)."""

    sql: str
    args: list[Any]
    count_sql: str
    count_args: list[Any]


def index_settings(conditions: Conditions, params: SearchParams, top_k: int) -> str:
    """The CTE ``settings`` that sets an approximate search's pgvector settings for its own statement.

    ``set_config(…, true)`` is the function form of SET LOCAL: the values hold until the end of the statement's
    own transaction and never reach the next user of the pooled connection. A subquery that scans the index
    must name ``settings`` laterally (``SETTLED``), so that it runs after them and the scan reads them.
    """
    ef_search = conditions.parameter(str(max(params.ef_search, top_k)))
    budget = conditions.parameter(str(params.scan_budget))
    return f"""settings AS MATERIALIZED (
        SELECT set_config('hnsw.ef_search', {ef_search}, true) AS ef_search,
               set_config('hnsw.iterative_scan', 'relaxed_order', true) AS iterative_scan,
               set_config('hnsw.max_scan_tuples', {budget}, true) AS max_scan_tuples
    )"""


# The condition by which an index scan depends on the ``settings`` CTE (see ``index_settings``).
SETTLED = "settings.ef_search IS NOT NULL"


def search_statement(collection: Collection, query: Query) -> SearchStatement:
    """The one statement that ``search`` runs for ``query``; also what bench/vectors.py runs as its direct-SQL
    baseline. Approximate: the index scan under ``index_settings``. Exact: the distances of every matching
    row, sorted; the subquery fence (OFFSET 0) keeps the planner from answering the ORDER BY from the index."""
    conditions = _conditions(query)
    metric = collection.metric
    # The filter's values first, then the limit: the count of matches takes those; then the rest.
    limit = conditions.parameter(query.top_k)
    count_args = list(conditions.args)
    where = conditions.sql()
    vector = f"{conditions.parameter(query.vector)}::vector::{collection.vector_type}"
    distance = f"vector {metric.operator} {vector}"
    score = f"SELECT id, {metric.score} AS score, content_id, metadata"
    if query.params.exact:
        sql = f"""
            {score} FROM (
                SELECT id, {distance} AS d, content_id, metadata FROM {table(collection)} e WHERE {where} OFFSET 0
            ) every_row
            ORDER BY d, id LIMIT {limit}
        """
    else:
        sql = f"""
            WITH {index_settings(conditions, query.params, query.top_k)}
            {score} FROM settings, LATERAL (
                SELECT id, {distance} AS d, content_id, metadata FROM {table(collection)} e
                WHERE {where} AND {SETTLED}
                ORDER BY {distance} LIMIT {limit}
            ) nearest
            ORDER BY d, id
        """
    return SearchStatement(
        sql=sql,
        args=conditions.args,
        count_sql=f"SELECT count(*) FROM (SELECT FROM {table(collection)} e WHERE {where} LIMIT {limit}) m",
        count_args=count_args,
    )


async def search(db: Database, collection: Collection, query: Query) -> SearchResult:
    """The ``top_k`` live embeddings nearest to ``query.vector`` that meet its filter, best first.

    Approximate searches walk the HNSW index with pgvector's iterative scan (relaxed order, re-sorted here), so
    a filter does not cut the result short while matches remain within the scan budget; exact searches compare
    every row. The planner may also answer a selective filter exactly through another plan. Per-request
    settings are local to the search's own transaction (``search_statement``), so they end with it and never
    reach the next user of the pooled connection.

    When the result is short of ``top_k`` under a filter, one more statement counts the matches: if more
    exist, the index scan ran out of budget, and the result says so with the rows it visited (from EXPLAIN
    ANALYZE of the same statement). Only such short results pay for that.
    """
    statement = search_statement(collection, query)
    try:
        rows = await db.fetch(statement.sql, *statement.args, idempotent=True)
        hits = [
            Hit(id=row["id"], score=row["score"], content_id=row["content_id"], metadata=row["metadata"] or {})
            for row in rows
        ]
        filtered = query.where or query.excluded or query.excluded_contents
        if len(hits) == query.top_k or query.params.exact or not filtered:
            return SearchResult(hits)
        matches = await db.fetchval(statement.count_sql, *statement.count_args, idempotent=True)
        if matches <= len(hits):
            return SearchResult(hits)
        plan = await db.fetchval(
            f"EXPLAIN (ANALYZE, TIMING OFF, SUMMARY OFF, FORMAT JSON) {statement.sql}", *statement.args, idempotent=True
        )
        return SearchResult(hits, truncated=True, scanned=_scanned_rows(plan, table(collection)))
    except asyncpg.UndefinedTableError:
        raise CollectionGone(collection.name) from None


def _scanned_rows(plan: Any, relation: str) -> int:
    """Rows that the scans of ``relation`` in an EXPLAIN ANALYZE (JSON) plan produced or filtered out."""
    nodes = [(json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]]
    name = relation.split(".", 1)[1]
    scanned = 0
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        if node.get("Relation Name") == name:
            scanned += int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))
    return scanned


async def purge_expired(db: Database, collection: Collection, *, limit: int) -> int:
    """Deletes up to ``limit`` expired embeddings of ``collection``; rows locked by a write are left for later."""
    try:
        return await db.fetchval(
            f"""
            WITH purged AS (
                DELETE FROM {table(collection)} WHERE id IN (
                    SELECT id FROM {table(collection)} WHERE expire_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)
                RETURNING 1)
            SELECT count(*) FROM purged
            """,
            limit,
        )
    except asyncpg.UndefinedTableError:
        return 0  # dropped meanwhile: nothing left to purge

