"""SearchContents over the wire: websearch syntax, ranking, filters, snippets and paging."""

from __future__ import annotations

import uuid

import grpc
import pytest
from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as pb
from dataservice.v1 import content_service_pb2_grpc

from tests.grpc_errors import bad_request_fields
from tests.test_content import create, fails, new_user


@pytest.fixture(scope="module")
def contents(channel: grpc.aio.Channel) -> content_service_pb2_grpc.ContentServiceStub:
    return content_service_pb2_grpc.ContentServiceStub(channel)


@pytest.fixture
async def author(users) -> str:
    return await new_user(users)


def word() -> str:
    """A made-up word no other test uses (letters only, so the English stemmer leaves it whole)."""
    return "zq" + "".join(chr(ord("a") + int(ch, 16)) for ch in uuid.uuid4().hex[:10])


async def search(contents, query: str, **fields) -> list[pb.ContentSearchResult]:
    return list((await contents.SearchContents(pb.SearchContentsRequest(query=query, **fields))).results)


async def test_search_ranks_title_hits_above_body_hits_and_marks_the_matches(contents, author):
    term = word()
    in_body = await create(contents, author, title="Unrelated", body=f"Once there was a {term} in the body text.")
    in_title = await create(contents, author, title=f"The {term}", body="Nothing here matches.")
    results = await search(contents, term)
    assert [result.content.id for result in results] == [in_title.id, in_body.id]
    assert results[0].rank > results[1].rank
    assert f"<mark>{term}</mark>" in results[1].snippet
    assert results[0].snippet.startswith("Nothing here"), "a title-only hit shows the start of the body"
    assert results[0].content == in_title


async def test_search_syntax_phrases_or_and_exclusion(contents, author):
    a, b, c = word(), word(), word()
    both_in_order = await create(contents, author, body=f"{a} {b} together")
    both_apart = await create(contents, author, body=f"{b} then {a}")
    only_c = await create(contents, author, body=f"just {c}")

    def ids(results: list[pb.ContentSearchResult]) -> set[str]:
        return {result.content.id for result in results}

    assert ids(await search(contents, f'"{a} {b}"')) == {both_in_order.id}
    assert ids(await search(contents, f"{a} {b}")) == {both_in_order.id, both_apart.id}
    assert ids(await search(contents, f"{a} or {c}")) == {both_in_order.id, both_apart.id, only_c.id}
    assert ids(await search(contents, f"{a} -together")) == {both_apart.id}


async def test_search_applies_the_list_filters(contents, users):
    term = word()
    author, someone = await new_user(users), await new_user(users)
    mine = await create(contents, author, body=term, tags=["keep"], status=common_pb2.CONTENT_STATUS_PUBLISHED)
    await create(contents, author, body=term)
    await create(contents, someone, body=term, tags=["keep"])
    where = pb.ContentFilter(author_id=author, tags=["keep"], statuses=[common_pb2.CONTENT_STATUS_PUBLISHED])
    assert [result.content.id for result in await search(contents, term, filter=where)] == [mine.id]


async def test_search_pages_cover_every_hit_once_in_rank_order(contents, author):
    term = word()
    for count in range(1, 8):
        await create(contents, author, body=" ".join([term] * count + ["filler"] * (8 - count)))
    request = pb.SearchContentsRequest(query=term, page_size=3)
    seen: list[pb.ContentSearchResult] = []
    while True:
        page = await contents.SearchContents(request)
        seen.extend(page.results)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert len(seen) == len({result.content.id for result in seen}) == 7
    ranks = [result.rank for result in seen]
    assert ranks == sorted(ranks, reverse=True)
    first = await contents.SearchContents(pb.SearchContentsRequest(query=term, page_size=3))
    other = pb.SearchContentsRequest(query=word(), page_size=3, page_token=first.next_page_token)
    assert bad_request_fields(await fails(contents.SearchContents(other))) == {"page_token"}


async def test_no_match_and_stop_words_only_are_empty_pages_not_errors(contents):
    assert await search(contents, word()) == []
    assert await search(contents, "the and of") == []
    assert await search(contents, '"" - OR') == []


async def test_search_refuses_bad_queries_and_hybrid_is_unimplemented(contents):
    cases = [
        (pb.SearchContentsRequest(query=""), {"query"}),
        (pb.SearchContentsRequest(query="x" * 1001), {"query"}),
        (pb.SearchContentsRequest(query="a\x00b"), {"query"}),
        (pb.SearchContentsRequest(query="a", page_size=-1), {"page_size"}),
        (pb.SearchContentsRequest(query="a", filter=pb.ContentFilter(author_id="x")), {"filter.author_id"}),
    ]
    for request, fields in cases:
        assert bad_request_fields(await fails(contents.SearchContents(request))) == fields, request
    hybrid = await fails(contents.SearchContents(pb.SearchContentsRequest(query="a", hybrid=True)))
    assert hybrid.code() is grpc.StatusCode.UNIMPLEMENTED
