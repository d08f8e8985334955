"""SearchContents over the wire: websearch syntax, ranking, filters, snippets, paging and its limits."""

from __future__ import annotations

import asyncio
import uuid

from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as pb

from tests.grpc_errors import bad_request_fields
from tests.test_content import MIB, create, fails, new_user

PUBLISHED = common_pb2.CONTENT_STATUS_PUBLISHED


def word() -> str:
    """A made-up word no other test uses, so tests sharing one database find only their own content. Letters
    only, ending in one the English stemmer leaves alone, so the word is its own lexeme."""
    return "zq" + "".join(chr(ord("a") + int(digit, 16)) for digit in uuid.uuid4().hex[:10]) + "x"


async def search(contents, query: str, **fields) -> list[pb.ContentSearchResult]:
    return list((await contents.SearchContents(pb.SearchContentsRequest(query=query, **fields))).results)


def ids(results: list[pb.ContentSearchResult]) -> list[str]:
    return [result.content.id for result in results]


async def search_all(contents, request: pb.SearchContentsRequest) -> list[pb.ContentSearchResult]:
    seen: list[pb.ContentSearchResult] = []
    while True:
        page = await contents.SearchContents(request)
        seen.extend(page.results)
        if not page.next_page_token:
            return seen
        request.page_token = page.next_page_token


async def test_title_hits_rank_above_body_hits_and_snippets_mark_the_matches(contents, users):
    author, term = await new_user(users), word()
    in_body = await create(contents, author, title="Unrelated", body=f"Once there was a {term} in the body text.")
    in_title = await create(contents, author, title=f"The {term}", body="Nothing here matches. " * 20)
    results = await search(contents, term)
    assert ids(results) == [in_title.id, in_body.id]
    assert results[0].rank > results[1].rank > 0
    assert results[0].content == in_title
    assert results[1].snippet.startswith(f"Once there was a <mark>{term}</mark> in the body text")
    assert results[0].snippet.startswith("Nothing here matches."), "a title-only hit shows the start of the body"
    assert "<mark>" not in results[0].snippet


async def test_search_syntax_quoted_phrases_or_and_exclusion(contents, users):
    author, a, b, c = await new_user(users), word(), word(), word()
    in_order = await create(contents, author, body=f"{a} {b} together")
    apart = await create(contents, author, body=f"{b} then {a}")
    only_c = await create(contents, author, body=f"just {c}")

    async def found(query: str) -> set[str]:
        return set(ids(await search(contents, query)))

    assert await found(f'"{a} {b}"') == {in_order.id}
    assert await found(f"{a} {b}") == {in_order.id, apart.id}
    assert await found(f"{a} or {c}") == {in_order.id, apart.id, only_c.id}
    assert await found(f"{a} -together") == {apart.id}


async def test_search_applies_the_list_filters(contents, users):
    term, label = word(), word()
    author, someone = await new_user(users), await new_user(users)
    mine = await create(contents, author, body=term, tags=[label], status=PUBLISHED)
    draft = await create(contents, author, body=term, tags=[label])
    theirs = await create(contents, someone, body=term, tags=[label], status=PUBLISHED)
    untagged = await create(contents, author, body=term, status=PUBLISHED)

    async def found(**where) -> set[str]:
        return set(ids(await search(contents, term, filter=pb.ContentFilter(**where))))

    assert await found() == {mine.id, draft.id, theirs.id, untagged.id}
    assert await found(author_id=author, tags=[label], statuses=[PUBLISHED]) == {mine.id}
    assert await found(tags=[label]) == {mine.id, draft.id, theirs.id}
    assert await found(create_time_after=draft.create_time) == {theirs.id, untagged.id}
    assert await found(create_time_before=draft.create_time) == {mine.id}


async def test_search_pages_cover_every_hit_once_in_rank_order_ties_by_id(contents, users):
    author, term = await new_user(users), word()
    # Three bodies per weight: equal ranks, which only the id orders, across page boundaries.
    for count in (1, 2, 3):
        for _ in range(3):
            await create(contents, author, body=" ".join([term] * count + ["filler"] * (4 - count)))
    seen = await search_all(contents, pb.SearchContentsRequest(query=term, page_size=2))
    assert len(ids(seen)) == len(set(ids(seen))) == 9
    keys = [(result.rank, uuid.UUID(result.content.id).bytes) for result in seen]
    assert keys == sorted(keys, reverse=True)
    assert len({result.rank for result in seen}) == 3


async def test_a_search_page_token_is_bound_to_its_query_filter_and_method(contents, users):
    author, term = await new_user(users), word()
    for _ in range(3):
        await create(contents, author, body=term)
    token = (await contents.SearchContents(pb.SearchContentsRequest(query=term, page_size=1))).next_page_token
    others = [
        pb.SearchContentsRequest(query=word(), page_token=token),
        pb.SearchContentsRequest(query=term, filter=pb.ContentFilter(author_id=author), page_token=token),
    ]
    for other in others:
        assert bad_request_fields(await fails(contents.SearchContents(other))) == {"page_token"}
    assert bad_request_fields(await fails(contents.ListContents(pb.ListContentsRequest(page_token=token)))) == {
        "page_token"
    }
    next_page = await contents.SearchContents(pb.SearchContentsRequest(query=term, page_size=5, page_token=token))
    assert len(next_page.results) == 2


async def test_search_pages_hold_50_by_default_and_at_most_100(contents, users):
    author, term = await new_user(users), word()
    await asyncio.gather(*(create(contents, author, body=term) for _ in range(101)))
    assert len(await search(contents, term)) == 50
    page = await contents.SearchContents(pb.SearchContentsRequest(query=term, page_size=1000))
    assert len(page.results) == 100 and page.next_page_token


async def test_no_match_and_stop_words_only_are_empty_pages_not_errors(contents):
    for query in (word(), "the and of", '"" - OR', "-", "!!!"):
        page = await contents.SearchContents(pb.SearchContentsRequest(query=query))
        assert page == pb.SearchContentsResponse(), query


async def test_search_refuses_bad_requests(contents):
    cases = [
        (pb.SearchContentsRequest(query=""), {"query"}),
        (pb.SearchContentsRequest(query="x" * 1001), {"query"}),
        (pb.SearchContentsRequest(query="a\x00b"), {"query"}),
        (pb.SearchContentsRequest(query="a", page_size=-1), {"page_size"}),
        (pb.SearchContentsRequest(query="a", page_token="not a token"), {"page_token"}),
        (pb.SearchContentsRequest(query="a", filter=pb.ContentFilter(author_id="x")), {"filter.author_id"}),
        (pb.SearchContentsRequest(query="a", filter=pb.ContentFilter(statuses=[9])), {"filter.statuses[0]"}),
        (pb.SearchContentsRequest(query="", filter=pb.ContentFilter(tags=[""])), {"query", "filter.tags[0]"}),
        (pb.SearchContentsRequest(query="a", vector_query=pb.VectorQuery(collection="No Name", vector=[1])),
         {"vector_query.collection"}),
    ]
    for request, fields in cases:
        assert bad_request_fields(await fails(contents.SearchContents(request))) == fields, request
    assert len(await search(contents, "x" * 1000)) == 0


async def test_a_body_of_one_mib_of_distinct_words_is_stored_and_searchable(contents, users):
    author, first, early = await new_user(users), word(), word()
    words = [first, *(f"w{index:x}" for index in range(200_000))]
    words[5_000] = early
    body = " ".join(words).encode()[:MIB].decode()
    assert len(body.encode()) == MIB
    made = await create(contents, author, body=body)
    assert made.body == body
    for term in (first, early):
        results = await search(contents, term)
        assert ids(results) == [made.id] and f"<mark>{term}</mark>" in results[0].snippet
