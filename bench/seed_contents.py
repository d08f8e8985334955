"""Seed the content the content paths read: rows of a few KB of word-like text, written with COPY.

Ten thousand CreateContent calls would take minutes on two cores; one COPY takes seconds, and the table's
generated ``search`` column is filled by PostgreSQL as for any insert. COPY also gives the rows what the API
cannot: creation and update times spread over a year, publish times, versions above 1.

Bodies draw words from a fixed vocabulary with Zipf-like frequencies: a few English stop words are the
commonest (to_tsvector drops them, as in real text), then pseudo-words of three syllables, a few of which
are in almost every body and most in very few. So full-text search ranks and filters as it would over real
text, and the queries (``QUERIES``) pair two words of middling frequency that occur together in about 2 % of
the bodies: a full first page of 50 and a few pages more over 10,000 rows.

Every seeded row carries the tag ``bench-seed``; a rerun on the same database tops the rows up to the count
asked for instead of adding as many again.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from bench.seed import SeededUser

SEED_TAG = "bench-seed"
WORDS_PER_BODY = 450  # about 2.9 KB of text
TITLE_WORDS = 6
_STOP_WORDS = ["the", "of", "and", "to", "a", "in", "is", "that", "for", "it"]
_SYLLABLES = ["ka", "lo", "mi", "ner", "tu", "sa", "vel", "qui", "dor", "pan", "ri", "zo", "ben", "ta", "gul"]
VOCABULARY = _STOP_WORDS + ["".join(parts) for parts in itertools.product(_SYLLABLES, repeat=3)][:2000]
_CUMULATIVE = list(itertools.accumulate(1.0 / rank for rank in range(1, len(VOCABULARY) + 1)))
# A word of rank r is in about 1 - exp(-55 / r) of the bodies: near rank 360, 14 %; two of them, 2 %.
_QUERY_RANK = 360
QUERIES = [f"{VOCABULARY[_QUERY_RANK + 2 * i]} {VOCABULARY[_QUERY_RANK + 2 * i + 1]}" for i in range(8)]
_STATUSES = ["published"] * 6 + ["draft"] * 3 + ["archived"]
_TOPICS = 20
_AGE = timedelta(days=365)
_COLUMNS = [
    "author_id", "title", "body", "tags", "metadata", "status", "created_at", "updated_at", "published_at", "version"
]


@dataclass(frozen=True)
class SeededContents:
    ids: list[str]
    """Seeded rows, oldest first."""
    queries: list[str]
    """SearchContents queries with a few pages of hits among the seeded rows."""


def _row(rng: random.Random, author: UUID, now: datetime) -> tuple[object, ...]:
    words = rng.choices(VOCABULARY, cum_weights=_CUMULATIVE, k=WORDS_PER_BODY + TITLE_WORDS)
    status = rng.choice(_STATUSES)
    created = now - _AGE * rng.random()
    updated = min(now, created + timedelta(days=30) * rng.random() ** 3)  # most rows barely change
    ever_published = status == "published" or (status == "archived" and rng.random() < 0.9)
    published = created + (updated - created) * rng.random() if ever_published else None
    # Topics are Zipf-like too, so a tag filter can be broad or narrow.
    topics = {f"topic-{min(int(rng.paretovariate(1.0)), _TOPICS)}" for _ in range(rng.randint(1, 3))}
    return (
        author,
        " ".join(words[:TITLE_WORDS]).capitalize(),
        " ".join(words[TITLE_WORDS:]),
        [SEED_TAG, *sorted(topics)],
        json.dumps({"source": "bench", "lang": "en", "score": rng.randrange(100)}),
        status,
        created,
        updated,
        published,
        1 + int(rng.expovariate(1.0)),
    )


async def copy_contents(conn: asyncpg.Connection, authors: Sequence[UUID], count: int, *, seed: int) -> None:
    """Writes ``count`` generated rows, by the authors in turn, with one COPY; the same seed makes the same
    rows. ``conn`` must have no jsonb codec (metadata goes as JSON text)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    records = [_row(rng, authors[index % len(authors)], now) for index in range(count)]
    await conn.copy_records_to_table("contents", records=records, columns=_COLUMNS)


async def seed_contents(database_url: str, authors: list[SeededUser], count: int) -> SeededContents:
    """Makes sure ``count`` seeded rows exist and returns their ids, oldest first."""
    conn = await asyncpg.connect(database_url)
    try:
        have = await conn.fetchval("SELECT count(*) FROM contents WHERE tags @> ARRAY[$1]", SEED_TAG)
        if have < count:
            await copy_contents(conn, [UUID(author.id) for author in authors], count - have, seed=have)
            await conn.execute("ANALYZE contents")
        rows = await conn.fetch(
            "SELECT id FROM contents WHERE tags @> ARRAY[$1] ORDER BY created_at, id LIMIT $2", SEED_TAG, count
        )
    finally:
        await conn.close()
    return SeededContents([str(row["id"]) for row in rows], QUERIES)
