"""SQL for content. Every function takes the Database, returns domain objects and raises domain errors."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from server.db.database import Database
from server.domain.common import CreateRequest, PageCursor
from server.domain.content import (
    Content,
    ContentChanges,
    ContentFilter,
    ContentOrder,
    ContentStatus,
    NewContent,
    RankCursor,
    SearchHit,
)
from server.domain.embeddings import Collection, SearchParams
from server.errors import Conflict, FailedPrecondition, NotFound, RequestIdReused
from server.store import embeddings as embeddings_store
from server.store.conditions import Conditions

# Empty metadata arrives as NULL, which asyncpg returns without calling the JSON decoder: that Python call
# costs a fifth of the reading of a row, and most content has no metadata.
_COLUMNS = (
    "id, author_id, title, body, tags, NULLIF(metadata, '{}') AS metadata, status, created_at, updated_at,"
    " published_at, version"
)
# The rank of a hit. The keyset condition of the next page repeats the very expression that ordered this one,
# so that a float4 rank compares equal to itself.
_RANK = "ts_rank(search, query)"
# ts_headline re-parses the text it is given, by far the costliest step of a search: it runs on the returned
# page only, and over the part of the body that the search vector covers (the first 100,000 characters, see
# migrations/0004), where every body match lies.
_SNIPPET = (
    "ts_headline('english', left(body, 100000), query,"
    " 'StartSel=<mark>, StopSel=</mark>, MinWords=15, MaxWords=35, MaxFragments=2')"
)
_NO_UNPUBLISH = "published content cannot return to draft; archive it instead"
# ContentStatus(value) as a plain lookup: the Enum call costs ten times as much, and runs once per row read.
_STATUSES = {status.value: status for status in ContentStatus}


def _content(row: asyncpg.Record) -> Content:
    return Content(
        id=row["id"],
        author_id=row["author_id"],
        title=row["title"],
        body=row["body"],
        tags=row["tags"],
        metadata=row["metadata"] or {},
        status=_STATUSES[row["status"]],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        published_at=row["published_at"],
        version=row["version"],
    )


async def create_content(db: Database, new: NewContent, request: CreateRequest | None) -> Content:
    """Inserts content. With a request id already used by the same request, returns what that request created
    (AIP-155); used by a different request, raises InvalidArgument naming ``request_id``."""
    try:
        row = await db.fetchrow(
            f"""
            INSERT INTO contents (author_id, title, body, tags, metadata, status, published_at,
                                  create_request_id, create_request_fingerprint)
            VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 = 'published' THEN now() END, $7, $8)
            ON CONFLICT (create_request_id) DO NOTHING
            RETURNING {_COLUMNS}
            """,
            new.author_id,
            new.title,
            new.body,
            new.tags,
            new.metadata,
            new.status.value,
            request.id if request else None,
            request.fingerprint if request else None,
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("User", str(new.author_id)) from None
    if row is not None:
        return _content(row)
    assert request is not None, "only create_request_id can conflict without raising"
    row = await db.fetchrow(
        f"SELECT {_COLUMNS}, create_request_fingerprint FROM contents WHERE create_request_id = $1",
        request.id,
        idempotent=True,
    )
    if row is None:  # the content it created was deleted since: the retry makes it again
        return await create_content(db, new, request)
    if bytes(row["create_request_fingerprint"]) != request.fingerprint:
        raise RequestIdReused()
    return _content(row)


async def get_content(db: Database, content_id: UUID) -> Content:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM contents WHERE id = $1", content_id, idempotent=True)
    if row is None:
        raise NotFound("Content", str(content_id))
    return _content(row)


async def get_contents(db: Database, content_ids: list[UUID]) -> dict[UUID, Content]:
    """The content of each id that has some, in one query."""
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM contents WHERE id = ANY($1::uuid[])", content_ids, idempotent=True)
    return {row["id"]: _content(row) for row in rows}


def _add_filter(conditions: Conditions, where: ContentFilter) -> None:
    """The conditions of a ContentFilter, on contents' own columns (unqualified)."""
    if where.author_id is not None:
        conditions.add("author_id = {}", where.author_id)
    if where.tags:
        conditions.add("tags @> {}::text[]", where.tags)
    if where.statuses:
        conditions.add("status = ANY({}::text[])", [status.value for status in where.statuses])
    if where.created_after is not None:
        conditions.add("created_at > {}", where.created_after)
    if where.created_before is not None:
        conditions.add("created_at < {}", where.created_before)


async def list_contents(
    db: Database, where: ContentFilter, order: ContentOrder, *, after: PageCursor | None, limit: int
) -> list[Content]:
    """A page of content in ``order`` strictly after ``after``: keyset paging, stable under inserts and deletes.
    The order's time column and direction come from the ContentOrder enum, never from the request's text."""
    conditions = Conditions()
    _add_filter(conditions, where)
    direction, beyond = ("DESC", "<") if order.descending else ("ASC", ">")
    if after is not None:  # the cursor's created_at is the position in the order's column, updated_at or not
        conditions.add(f"({order.column}, id) {beyond} ({{}}, {{}})", after.created_at, after.id)
    limit_parameter = conditions.parameter(limit)
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM contents WHERE {conditions.sql()}
        ORDER BY {order.column} {direction}, id {direction} LIMIT {limit_parameter}
        """,
        *conditions.args,
        idempotent=True,
    )
    return [_content(row) for row in rows]


async def search_contents(
    db: Database, query: str, where: ContentFilter, *, after: RankCursor | None, limit: int
) -> list[SearchHit]:
    """Full-text matches of ``query`` (websearch_to_tsquery syntax), best rank first, ties by id descending.
    A query without searchable words (only stop words) matches nothing."""
    conditions = Conditions(query)
    _add_filter(conditions, where)
    if after is not None:
        conditions.add(f"({_RANK}, id) < ({{}}::real, {{}})", after.rank, after.id)
    limit_parameter = conditions.parameter(limit)
    rows = await db.fetch(
        f"""
        WITH parsed AS (SELECT websearch_to_tsquery('english', $1) AS query),
        page AS (
            SELECT id, {_RANK} AS rank, query
            FROM contents, parsed
            WHERE search @@ query AND {conditions.sql()}
            ORDER BY rank DESC, id DESC
            LIMIT {limit_parameter}
        )
        SELECT {_COLUMNS}, rank, {_SNIPPET} AS snippet
        FROM page JOIN contents USING (id) ORDER BY rank DESC, id DESC
        """,
        *conditions.args,
        idempotent=True,
    )
    return [SearchHit(_content(row), row["rank"], row["snippet"]) for row in rows]


# A hybrid search fuses the first HYBRID_CANDIDATES of each ranking by reciprocal rank fusion with constant
# RRF_K (the usual 60): a content's score is the sum of 1 / (RRF_K + position) over the rankings it is in.
HYBRID_CANDIDATES = 100
RRF_K = 60


async def hybrid_search(
    db: Database,
    collection: Collection,
    query: str,
    vector: list[float],
    where: ContentFilter,
    params: SearchParams,
    *,
    after: RankCursor | None,
    limit: int,
) -> list[SearchHit]:
    """Content ranked by the fusion of its full-text rank for ``query`` and the similarity of its embeddings in
    ``collection`` to ``vector``, both under ``where``, best first, ties by id descending; in one statement.

    The vector ranking walks the collection's index (iterative scan, ``params``) over embeddings whose content
    meets the filter, and ranks each content by its nearest embedding. Content found by only one ranking is
    fused too; its snippet is empty when the query's words do not occur in it. The fused score is a float4,
    so that a page's last score compares equal to itself in the next page's keyset condition.
    """
    conditions = Conditions(query)
    _add_filter(conditions, where)
    # The filter names contents' columns unqualified: in the vector half it runs inside a subquery on contents,
    # where they resolve to the content of the embedding, not to the embedding's own tags or created_at.
    filter_sql = conditions.sql()
    vector_value = f"{conditions.parameter(vector)}::vector::{collection.vector_type}"
    candidates = conditions.parameter(HYBRID_CANDIDATES)
    page = "true"
    if after is not None:
        page = f"(score, id) < ({conditions.parameter(after.rank)}::real, {conditions.parameter(after.id)})"
    limit_parameter = conditions.parameter(limit)
    distance = f"e.vector {collection.metric.operator} {vector_value}"
    settings = embeddings_store.index_settings(conditions, params, HYBRID_CANDIDATES)
    statement = f"""
        WITH parsed AS (SELECT websearch_to_tsquery('english', $1) AS query),
        {settings},
        by_text AS (
            SELECT id, row_number() OVER (ORDER BY {_RANK} DESC, id DESC) AS position
            FROM contents, parsed WHERE search @@ query AND {filter_sql}
            ORDER BY {_RANK} DESC, id DESC LIMIT {candidates}
        ),
        nearest AS MATERIALIZED (
            SELECT n.content_id, n.d FROM settings, LATERAL (
                SELECT e.content_id, {distance} AS d FROM {embeddings_store.table(collection)} e
                WHERE e.content_id IS NOT NULL AND (e.expire_at IS NULL OR e.expire_at > now())
                  AND EXISTS (SELECT FROM contents WHERE contents.id = e.content_id AND {filter_sql})
                  AND {embeddings_store.SETTLED}
                ORDER BY {distance} LIMIT {candidates}
            ) n
        ),
        by_vector AS (
            SELECT content_id AS id, row_number() OVER (ORDER BY min(d), content_id) AS position
            FROM nearest GROUP BY content_id
        ),
        fused AS (
            SELECT id, sum(1.0 / ({RRF_K} + position))::real AS score
            FROM (SELECT id, position FROM by_text UNION ALL SELECT id, position FROM by_vector) ranked
            GROUP BY id
        ),
        page AS (SELECT id, score FROM fused WHERE {page} ORDER BY score DESC, id DESC LIMIT {limit_parameter})
        SELECT {_COLUMNS}, score AS rank, CASE WHEN search @@ query THEN {_SNIPPET} ELSE '' END AS snippet
        FROM page JOIN contents USING (id), parsed
        ORDER BY score DESC, id DESC
    """
    try:
        rows = await db.fetch(statement, *conditions.args, idempotent=True)
    except asyncpg.UndefinedTableError:
        raise embeddings_store.CollectionGone(collection.name) from None
    return [SearchHit(_content(row), row["rank"], row["snippet"]) for row in rows]


async def update_content(
    db: Database, content_id: UUID, changes: ContentChanges, *, expected_version: int | None
) -> Content:
    """Sets the given fields in one statement; publish_time is set by the first publish and kept. With
    ``expected_version``, only if nobody wrote in between. Published content never returns to draft."""
    status = changes.status.value if changes.status is not None else None
    row = await db.fetchrow(
        f"""
        UPDATE contents SET
            title        = coalesce($2, title),
            body         = coalesce($3, body),
            tags         = coalesce($4, tags),
            metadata     = coalesce($5, metadata),
            status       = coalesce($6, status),
            published_at = CASE WHEN coalesce($6, status) = 'published' THEN coalesce(published_at, now())
                                ELSE published_at END
        WHERE id = $1 AND ($7::bigint IS NULL OR version = $7)
          AND NOT ($6 IS NOT DISTINCT FROM 'draft' AND published_at IS NOT NULL)
        RETURNING {_COLUMNS}
        """,
        content_id,
        changes.title,
        changes.body,
        changes.tags,
        changes.metadata,
        status,
        expected_version,
    )
    if row is None:  # no such content, a stale etag, or a return to draft: which one, says a second look
        version = await db.fetchval("SELECT version FROM contents WHERE id = $1", content_id, idempotent=True)
        if version is None:
            raise NotFound("Content", str(content_id))
        if expected_version is not None and version != expected_version:
            raise _stale()
        raise FailedPrecondition(_NO_UNPUBLISH, reason="CONTENT_ALREADY_PUBLISHED")
    return _content(row)


async def delete_content(db: Database, content_id: UUID, *, expected_version: int | None) -> None:
    row = await db.fetchrow(
        "DELETE FROM contents WHERE id = $1 AND ($2::bigint IS NULL OR version = $2) RETURNING id",
        content_id,
        expected_version,
    )
    if row is None:
        exists = await db.fetchval("SELECT true FROM contents WHERE id = $1", content_id, idempotent=True)
        if not exists:
            raise NotFound("Content", str(content_id))
        raise _stale()


async def content_ids_of_author(conn: asyncpg.Connection, author_id: UUID) -> list[UUID]:
    """The ids of everything the user wrote: for the user store to call inside the transaction that deletes the
    user (the foreign key deletes the content with it), so that their cache entries can be invalidated."""
    rows = await conn.fetch("SELECT id FROM contents WHERE author_id = $1", author_id)
    return [row["id"] for row in rows]


def _stale() -> Conflict:
    return Conflict("the content was modified since the etag was read; read it again and retry")
