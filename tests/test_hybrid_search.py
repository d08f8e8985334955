"""Hybrid SearchContents over the wire: the full-text ranking and the vector ranking fused by reciprocal rank
fusion, as documented in content_service.proto (VectorQuery), with filters, pages and errors."""

from __future__ import annotations

import uuid

import grpc
import pytest
from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as pb
from dataservice.v1 import embedding_service_pb2 as embedding_pb
from dataservice.v1 import embedding_service_pb2_grpc

from tests.grpc_errors import bad_request_fields, fails
from tests.harness import new_user

pytestmark = pytest.mark.pgvector

RRF_K = 60


@pytest.fixture(scope="module")
def embeddings(channel: grpc.aio.Channel) -> embedding_service_pb2_grpc.EmbeddingServiceStub:
    return embedding_service_pb2_grpc.EmbeddingServiceStub(channel)


async def corpus(contents, embeddings, users):
    """Six published pieces of content about a word no other test uses, and a draft: some match the word, some
    have embeddings near the query vector (1, 0), some both."""
    word = f"zq{uuid.uuid4().hex[:10]}"
    author = await new_user(users)
    collection = f"h_{uuid.uuid4().hex[:12]}"
    await embeddings.CreateCollection(embedding_pb.CreateCollectionRequest(collection=embedding_pb.Collection(
        name=collection, dimension=2, distance_metric=embedding_pb.DISTANCE_METRIC_L2)))
    specs = [  # title, body, vector (None: no embedding), status
        (f"{word} {word}", "first", [0.0, 5.0], common_pb2.CONTENT_STATUS_PUBLISHED),
        ("second", f"{word} and more", [0.9, 0.0], common_pb2.CONTENT_STATUS_PUBLISHED),
        ("third", "nothing to see", [1.0, 0.1], common_pb2.CONTENT_STATUS_PUBLISHED),
        ("fourth", f"a {word} here", None, common_pb2.CONTENT_STATUS_PUBLISHED),
        ("fifth", "vector only", [2.0, 0.0], common_pb2.CONTENT_STATUS_PUBLISHED),
        ("sixth", f"{word} far away", [9.0, 9.0], common_pb2.CONTENT_STATUS_PUBLISHED),
        (f"draft {word}", "unpublished", [1.0, 0.0], common_pb2.CONTENT_STATUS_DRAFT),
    ]
    ids = []
    items = []
    for title, body, vector, status in specs:
        created = await contents.CreateContent(pb.CreateContentRequest(
            content=pb.Content(author_id=author, title=title, body=body, status=status)))
        ids.append(created.content.id)
        if vector is not None:
            items.append(embedding_pb.Embedding(id=str(uuid.uuid4()), content_id=created.content.id, vector=vector))
    await embeddings.UpsertEmbeddings(embedding_pb.UpsertEmbeddingsRequest(collection=collection, embeddings=items))
    return word, author, collection, ids


def fuse(*rankings: list[str]) -> list[tuple[str, float]]:
    """Reciprocal rank fusion as documented: sum of 1 / (60 + position), best first, ties by id descending."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for position, content_id in enumerate(ranking, start=1):
            scores[content_id] = scores.get(content_id, 0.0) + 1.0 / (RRF_K + position)
    return sorted(scores.items(), key=lambda entry: (-entry[1], uuid.UUID(entry[0]).int * -1))


async def test_hybrid_search_fuses_the_text_and_vector_rankings_by_reciprocal_rank(contents, embeddings, users):
    word, author, collection, ids = await corpus(contents, embeddings, users)
    published = pb.ContentFilter(author_id=author, statuses=[common_pb2.CONTENT_STATUS_PUBLISHED])
    text = await contents.SearchContents(pb.SearchContentsRequest(query=word, filter=published))
    text_ranking = [hit.content.id for hit in text.results]
    assert set(text_ranking) == {ids[0], ids[1], ids[3], ids[5]}
    near = await embeddings.SearchEmbeddings(embedding_pb.SearchEmbeddingsRequest(
        collection=collection, vector=embedding_pb.Vector(values=[1.0, 0.0]), top_k=100,
        filter=embedding_pb.EmbeddingFilter(content_statuses=[common_pb2.CONTENT_STATUS_PUBLISHED]),
        params=embedding_pb.SearchParams(exact=True)))
    vector_ranking = [hit.content_id for hit in near.results]
    assert vector_ranking == [ids[2], ids[1], ids[4], ids[0], ids[5]]

    hybrid = await contents.SearchContents(pb.SearchContentsRequest(
        query=word, filter=published, vector_query=pb.VectorQuery(collection=collection, vector=[1.0, 0.0])))
    expected = fuse(text_ranking, vector_ranking)
    assert [hit.content.id for hit in hybrid.results] == [content_id for content_id, _ in expected]
    for hit, (_, score) in zip(hybrid.results, expected):
        assert hit.rank == pytest.approx(score, rel=1e-6)
    snippets = {hit.content.id: hit.snippet for hit in hybrid.results}
    assert snippets[ids[2]] == "" and snippets[ids[4]] == ""  # found by vector only
    assert f"<mark>{word}</mark>" in snippets[ids[1]]


async def test_hybrid_pages_walk_the_fused_ranking_once(contents, embeddings, users):
    word, author, collection, ids = await corpus(contents, embeddings, users)
    request = pb.SearchContentsRequest(
        query=word, filter=pb.ContentFilter(author_id=author), page_size=2,
        vector_query=pb.VectorQuery(collection=collection, vector=[1.0, 0.0]))
    whole = await contents.SearchContents(pb.SearchContentsRequest(
        query=word, filter=pb.ContentFilter(author_id=author),
        vector_query=pb.VectorQuery(collection=collection, vector=[1.0, 0.0])))
    assert ids[6] in {hit.content.id for hit in whole.results}  # the draft, now that the filter allows it
    paged = []
    while True:
        page = await contents.SearchContents(request)
        paged += [hit.content.id for hit in page.results]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert paged == [hit.content.id for hit in whole.results] and len(paged) == 7


async def test_hybrid_search_errors(contents, embeddings, users):
    word, author, collection, ids = await corpus(contents, embeddings, users)
    unknown = await fails(contents.SearchContents(pb.SearchContentsRequest(
        query=word, vector_query=pb.VectorQuery(collection="no_such_collection", vector=[1, 0]))))
    assert unknown.code() is grpc.StatusCode.NOT_FOUND
    wrong = await fails(contents.SearchContents(pb.SearchContentsRequest(
        query=word, vector_query=pb.VectorQuery(collection=collection, vector=[1, 0, 0]))))
    assert bad_request_fields(wrong) == {"vector_query.vector"}
