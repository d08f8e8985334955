"""ContentService over the wire: every RPC, its happy path and each error status."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
import redis.asyncio as redis
from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as pb
from dataservice.v1 import content_service_pb2_grpc
from dataservice.v1 import user_service_pb2 as users_pb
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2

from tests.grpc_errors import bad_request_fields
from tests.harness import unique_email

DRAFT = common_pb2.CONTENT_STATUS_DRAFT
PUBLISHED = common_pb2.CONTENT_STATUS_PUBLISHED
ARCHIVED = common_pb2.CONTENT_STATUS_ARCHIVED


@pytest.fixture(scope="module")
def contents(channel: grpc.aio.Channel) -> content_service_pb2_grpc.ContentServiceStub:
    return content_service_pb2_grpc.ContentServiceStub(channel)


@pytest.fixture
async def author(users) -> str:
    return await new_user(users)


@pytest.fixture
async def db(app) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(app.dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def new_user(users) -> str:
    request = users_pb.CreateUserRequest(
        user=users_pb.User(email=unique_email("author"), display_name="Author"), password="correct horse battery"
    )
    return (await users.CreateUser(request)).user.id


def content(author: str, **fields) -> pb.Content:
    metadata = fields.pop("metadata", None)
    message = pb.Content(author_id=author, title=fields.pop("title", "A title"), **fields)
    if metadata is not None:
        message.metadata.update(metadata)
    return message


async def create(contents, author: str, **fields) -> pb.Content:
    request_id = fields.pop("request_id", "")
    request = pb.CreateContentRequest(content=content(author, **fields), request_id=request_id)
    return (await contents.CreateContent(request)).content


async def fails(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def tag() -> str:
    """A tag no other test uses, so tests sharing one database see only their own rows through filters."""
    return f"t-{uuid.uuid4().hex[:12]}"


# --- CreateContent and GetContent -----------------------------------------------------------------------------


async def test_create_content_returns_the_stored_content_with_server_fields(contents, author):
    made = await create(
        contents, author, title="Hello", body="Some words", tags=["a", "b", "a"], metadata={"lang": "en", "n": 2}
    )
    assert uuid.UUID(made.id) and made.author_id == author
    assert (made.title, made.body, list(made.tags)) == ("Hello", "Some words", ["a", "b"])
    assert dict(made.metadata) == {"lang": "en", "n": 2}
    assert made.status == DRAFT and not made.HasField("publish_time")
    assert made.etag and made.create_time == made.update_time
    assert (await contents.GetContent(pb.GetContentRequest(id=made.id))).content == made


async def test_content_created_published_has_a_publish_time(contents, author):
    made = await create(contents, author, status=PUBLISHED)
    assert made.status == PUBLISHED and made.HasField("publish_time")


async def test_create_content_for_an_unknown_author_is_not_found(contents):
    error = await fails(contents.CreateContent(pb.CreateContentRequest(content=content(str(uuid.uuid4())))))
    assert error.code() is grpc.StatusCode.NOT_FOUND


async def test_create_content_names_every_bad_field_and_writes_nothing(contents, author, db):
    title = f"bad-{uuid.uuid4().hex}"
    cases = [
        (content(author, title=""), {"content.title"}),
        (content(author, title="x" * 301), {"content.title"}),
        (content(author, body="x" * (1024 * 1024 + 1)), {"content.body"}),
        (content(author, body="nul \x00 here"), {"content.body"}),
        (content(author, tags=[f"t{i}" for i in range(33)]), {"content.tags"}),
        (content(author, tags=["ok", "x" * 65, ""]), {"content.tags[1]", "content.tags[2]"}),
        (content(author, metadata={"big": "x" * 17000}), {"content.metadata"}),
        (content(author, metadata={"nul": "a\x00b"}), {"content.metadata"}),
        (content(author, metadata={"nan": float("nan")}), {"content.metadata"}),
        (content(author, status=7), {"content.status"}),
        (content("not-a-uuid"), {"content.author_id"}),
        (content(author, title="\x01"), {"content.title"}),
    ]
    for message, fields in cases:
        if message.title == "A title":
            message.title = title
        error = await fails(contents.CreateContent(pb.CreateContentRequest(content=message)))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(error) == fields, fields
    bad_request = pb.CreateContentRequest(content=content(author, title=title), request_id="nope")
    assert bad_request_fields(await fails(contents.CreateContent(bad_request))) == {"request_id"}
    assert await db.fetchval("SELECT count(*) FROM contents WHERE title = $1", title) == 0


async def test_a_body_of_one_mib_of_distinct_words_is_stored_and_searchable(contents, author):
    marker = f"zq{uuid.uuid4().hex[:10]}"
    words = [f"w{index:x}" for index in range(160_000)]
    body = " ".join([marker, *words])[: 1024 * 1024]
    assert len(body.encode()) == 1024 * 1024, "the body is exactly at the limit"
    made = await create(contents, author, body=body)
    assert made.body == body
    found = await contents.SearchContents(pb.SearchContentsRequest(query=marker))
    assert [result.content.id for result in found.results] == [made.id]


async def test_create_content_with_a_request_id_is_idempotent_under_concurrent_retries(contents, author, db):
    request = pb.CreateContentRequest(content=content(author, title="Once"), request_id=str(uuid.uuid4()))
    answers = await asyncio.gather(*(contents.CreateContent(request) for _ in range(8)))
    assert len({answer.content.id for answer in answers}) == 1
    assert answers[0].content == answers[-1].content
    count = await db.fetchval("SELECT count(*) FROM contents WHERE create_request_id = $1", uuid.UUID(request.request_id))
    assert count == 1


async def test_a_request_id_reused_for_other_content_is_invalid_argument(contents, author):
    request_id = str(uuid.uuid4())
    await create(contents, author, title="First", request_id=request_id)
    error = await fails(create(contents, author, title="Second", request_id=request_id))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(error) == {"request_id"}


async def test_get_content_unknown_is_not_found_and_malformed_is_invalid(contents):
    assert (await fails(contents.GetContent(pb.GetContentRequest(id=str(uuid.uuid4()))))).code() is (
        grpc.StatusCode.NOT_FOUND
    )
    assert bad_request_fields(await fails(contents.GetContent(pb.GetContentRequest(id="x")))) == {"id"}


# --- BatchGetContents -----------------------------------------------------------------------------------------


async def test_batch_get_answers_in_request_order_with_duplicates_and_missing_ids(contents, author):
    first = await create(contents, author, title="One")
    second = await create(contents, author, title="Two")
    missing = str(uuid.uuid4())
    answer = await contents.BatchGetContents(pb.BatchGetContentsRequest(ids=[second.id, missing, first.id, second.id]))
    assert [item.id for item in answer.contents] == [second.id, first.id, second.id]
    assert list(answer.missing_ids) == [missing]
    assert answer.contents[0] == second


async def test_batch_get_refuses_too_many_and_malformed_ids(contents):
    too_many = pb.BatchGetContentsRequest(ids=[str(uuid.uuid4()) for _ in range(101)])
    assert bad_request_fields(await fails(contents.BatchGetContents(too_many))) == {"ids"}
    malformed = pb.BatchGetContentsRequest(ids=[str(uuid.uuid4()), "nope"])
    assert bad_request_fields(await fails(contents.BatchGetContents(malformed))) == {"ids[1]"}


# --- ListContents ---------------------------------------------------------------------------------------------


async def list_all(contents, request: pb.ListContentsRequest) -> list[pb.Content]:
    seen: list[pb.Content] = []
    while True:
        page = await contents.ListContents(request)
        seen.extend(page.contents)
        if not page.next_page_token:
            return seen
        request.page_token = page.next_page_token


async def test_list_contents_filters_by_author_tags_status_and_time(contents, users):
    label, other = tag(), tag()
    author, someone = await new_user(users), await new_user(users)
    a = await create(contents, author, tags=[label, other], status=PUBLISHED)
    b = await create(contents, author, tags=[label])
    c = await create(contents, someone, tags=[label], status=ARCHIVED)

    def ids(page: pb.ListContentsResponse) -> set[str]:
        return {item.id for item in page.contents}

    by_tag = pb.ContentFilter(tags=[label])
    assert ids(await contents.ListContents(pb.ListContentsRequest(filter=by_tag))) == {a.id, b.id, c.id}
    both = pb.ContentFilter(tags=[label, other])
    assert ids(await contents.ListContents(pb.ListContentsRequest(filter=both))) == {a.id}
    mine = pb.ContentFilter(tags=[label], author_id=author)
    assert ids(await contents.ListContents(pb.ListContentsRequest(filter=mine))) == {a.id, b.id}
    visible = pb.ContentFilter(tags=[label], statuses=[PUBLISHED, ARCHIVED])
    assert ids(await contents.ListContents(pb.ListContentsRequest(filter=visible))) == {a.id, c.id}
    after_a = pb.ContentFilter(tags=[label], create_time_after=a.create_time)
    assert ids(await contents.ListContents(pb.ListContentsRequest(filter=after_a))) == {b.id, c.id}
    before_c = pb.ContentFilter(tags=[label], create_time_before=c.create_time)
    assert ids(await contents.ListContents(pb.ListContentsRequest(filter=before_c))) == {a.id, b.id}


@pytest.mark.parametrize(
    "order, field, reverse",
    [
        (pb.CONTENT_ORDER_UNSPECIFIED, "create_time", True),
        (pb.CONTENT_ORDER_CREATE_TIME_DESC, "create_time", True),
        (pb.CONTENT_ORDER_CREATE_TIME_ASC, "create_time", False),
        (pb.CONTENT_ORDER_UPDATE_TIME_DESC, "update_time", True),
        (pb.CONTENT_ORDER_UPDATE_TIME_ASC, "update_time", False),
    ],
)
async def test_list_contents_pages_through_every_order(contents, author, order, field, reverse):
    label = tag()
    made = [await create(contents, author, tags=[label], title=f"n{index}") for index in range(7)]
    await contents.UpdateContent(
        pb.UpdateContentRequest(content=pb.Content(id=made[0].id, title="touched"), update_mask=mask("title"))
    )
    listed = await list_all(contents, pb.ListContentsRequest(filter=pb.ContentFilter(tags=[label]), order=order, page_size=3))

    def key(item: pb.Content) -> tuple:
        stamp = getattr(item, field)
        return (stamp.seconds, stamp.nanos, uuid.UUID(item.id).bytes)

    assert len(listed) == 7 and {item.id for item in listed} == {item.id for item in made}
    assert [key(item) for item in listed] == sorted((key(item) for item in listed), reverse=reverse)


async def test_list_pages_are_stable_under_concurrent_inserts_and_deletes(contents, author):
    label = tag()
    made = [await create(contents, author, tags=[label]) for _ in range(9)]
    request = pb.ListContentsRequest(filter=pb.ContentFilter(tags=[label]), page_size=3)
    first = await contents.ListContents(request)
    await create(contents, author, tags=[label])  # newest first: lands before the cursor, never shifts a page
    # Deleting rows already seen, the cursor's own row included, shifts nothing; an unseen one just drops out.
    unseen = made[0].id  # the oldest: on the last page
    for deleted in (first.contents[0].id, first.contents[-1].id, unseen):
        await contents.DeleteContent(pb.DeleteContentRequest(id=deleted))
    request.page_token = first.next_page_token
    rest = await list_all(contents, request)
    seen = [item.id for item in first.contents] + [item.id for item in rest]
    assert len(seen) == len(set(seen)) == 8
    assert set(seen) == {item.id for item in made} - {unseen}


async def test_list_contents_refuses_bad_filters_and_a_token_of_another_filter(contents, author):
    cases = [
        (pb.ListContentsRequest(filter=pb.ContentFilter(author_id="x")), {"filter.author_id"}),
        (pb.ListContentsRequest(filter=pb.ContentFilter(statuses=[0])), {"filter.statuses[0]"}),
        (pb.ListContentsRequest(filter=pb.ContentFilter(statuses=[9])), {"filter.statuses[0]"}),
        (pb.ListContentsRequest(filter=pb.ContentFilter(tags=["x" * 65])), {"filter.tags[0]"}),
        (pb.ListContentsRequest(order=42), {"order"}),
        (pb.ListContentsRequest(page_size=-1), {"page_size"}),
        (
            pb.ListContentsRequest(filter=pb.ContentFilter(create_time_after=timestamp_pb2.Timestamp(seconds=2**60))),
            {"filter.create_time_after"},
        ),
    ]
    for request, fields in cases:
        assert bad_request_fields(await fails(contents.ListContents(request))) == fields, request
    label = tag()
    for _ in range(3):
        await create(contents, author, tags=[label])
    page = await contents.ListContents(pb.ListContentsRequest(filter=pb.ContentFilter(tags=[label]), page_size=1))
    other = pb.ListContentsRequest(filter=pb.ContentFilter(tags=[tag()]), page_token=page.next_page_token)
    assert bad_request_fields(await fails(contents.ListContents(other))) == {"page_token"}
    reordered = pb.ListContentsRequest(
        filter=pb.ContentFilter(tags=[label]), order=pb.CONTENT_ORDER_CREATE_TIME_ASC, page_token=page.next_page_token
    )
    assert bad_request_fields(await fails(contents.ListContents(reordered))) == {"page_token"}


# --- UpdateContent and DeleteContent --------------------------------------------------------------------------


async def test_update_content_changes_only_the_masked_fields_and_moves_the_etag(contents, author):
    made = await create(contents, author, title="Old", body="Body", tags=["x"])
    change = pb.Content(id=made.id, title="New", body="ignored", tags=["y", "y", "z"], metadata=struct_pb2.Struct())
    change.metadata.update({"k": "v"})
    updated = (
        await contents.UpdateContent(pb.UpdateContentRequest(content=change, update_mask=mask("title", "tags", "metadata")))
    ).content
    assert (updated.title, updated.body, list(updated.tags), dict(updated.metadata)) == ("New", "Body", ["y", "z"], {"k": "v"})
    assert updated.etag != made.etag and updated.create_time == made.create_time


async def test_publish_time_is_set_by_the_first_publish_and_kept_after(contents, author):
    made = await create(contents, author)

    async def set_status(status: int) -> pb.Content:
        request = pb.UpdateContentRequest(content=pb.Content(id=made.id, status=status), update_mask=mask("status"))
        return (await contents.UpdateContent(request)).content

    published = await set_status(PUBLISHED)
    assert published.HasField("publish_time")
    archived = await set_status(ARCHIVED)
    again = await set_status(PUBLISHED)
    assert archived.publish_time == again.publish_time == published.publish_time


async def test_published_content_cannot_return_to_draft(contents, author):
    made = await create(contents, author, status=PUBLISHED)
    request = pb.UpdateContentRequest(content=pb.Content(id=made.id, status=DRAFT), update_mask=mask("status"))
    error = await fails(contents.UpdateContent(request))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (await contents.GetContent(pb.GetContentRequest(id=made.id))).content.status == PUBLISHED


async def test_update_content_names_bad_fields(contents, author):
    made = await create(contents, author)
    cases = [
        (pb.UpdateContentRequest(content=pb.Content(id=made.id, title="x")), {"update_mask"}),
        (pb.UpdateContentRequest(content=pb.Content(id=made.id), update_mask=mask("author_id")), {"update_mask"}),
        (pb.UpdateContentRequest(content=pb.Content(id=made.id), update_mask=mask("status")), {"content.status"}),
        (pb.UpdateContentRequest(content=pb.Content(id=made.id), update_mask=mask("title")), {"content.title"}),
        (pb.UpdateContentRequest(content=pb.Content(id="x", title="t"), update_mask=mask("title")), {"content.id"}),
        (pb.UpdateContentRequest(content=pb.Content(id=made.id, title="t", etag="zz"), update_mask=mask("title")), {"content.etag"}),
    ]
    for request, fields in cases:
        assert bad_request_fields(await fails(contents.UpdateContent(request))) == fields, request


async def test_of_two_concurrent_updaters_with_one_etag_exactly_one_wins(contents, author):
    made = await create(contents, author)

    def update(title: str) -> pb.UpdateContentRequest:
        return pb.UpdateContentRequest(content=pb.Content(id=made.id, title=title, etag=made.etag), update_mask=mask("title"))

    outcomes = await asyncio.gather(
        contents.UpdateContent(update("A")), contents.UpdateContent(update("B")), return_exceptions=True
    )
    won = [outcome for outcome in outcomes if isinstance(outcome, pb.UpdateContentResponse)]
    lost = [outcome for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 1 and lost[0].code() is grpc.StatusCode.ABORTED
    assert (await contents.GetContent(pb.GetContentRequest(id=made.id))).content.title == won[0].content.title


async def test_update_and_delete_of_unknown_content_are_not_found(contents):
    unknown = str(uuid.uuid4())
    update = pb.UpdateContentRequest(content=pb.Content(id=unknown, title="t"), update_mask=mask("title"))
    assert (await fails(contents.UpdateContent(update))).code() is grpc.StatusCode.NOT_FOUND
    assert (await fails(contents.DeleteContent(pb.DeleteContentRequest(id=unknown)))).code() is grpc.StatusCode.NOT_FOUND


async def test_delete_content_with_a_stale_etag_is_aborted_and_keeps_it(contents, author):
    made = await create(contents, author)
    await contents.UpdateContent(pb.UpdateContentRequest(content=pb.Content(id=made.id, title="t"), update_mask=mask("title")))
    error = await fails(contents.DeleteContent(pb.DeleteContentRequest(id=made.id, etag=made.etag)))
    assert error.code() is grpc.StatusCode.ABORTED
    await contents.GetContent(pb.GetContentRequest(id=made.id))


# --- The cache ------------------------------------------------------------------------------------------------


async def test_a_cached_content_is_never_read_after_an_update_or_delete(contents, author, cache):
    made = await create(contents, author, title="Before")
    for _ in range(2):
        await contents.GetContent(pb.GetContentRequest(id=made.id))
    assert await cache.exists(f"dataservice:v2:content:{made.id}"), "the content is cached"
    await contents.UpdateContent(pb.UpdateContentRequest(content=pb.Content(id=made.id, title="After"), update_mask=mask("title")))
    assert (await contents.GetContent(pb.GetContentRequest(id=made.id))).content.title == "After"
    await contents.GetContent(pb.GetContentRequest(id=made.id))
    await contents.DeleteContent(pb.DeleteContentRequest(id=made.id))
    assert (await fails(contents.GetContent(pb.GetContentRequest(id=made.id)))).code() is grpc.StatusCode.NOT_FOUND


async def test_deleting_a_user_deletes_their_content_and_its_cached_copy(contents, users, cache):
    author = await new_user(users)
    made = await create(contents, author)
    for _ in range(2):
        await contents.GetContent(pb.GetContentRequest(id=made.id))
    assert await cache.exists(f"dataservice:v2:content:{made.id}"), "the content is cached"
    await users.DeleteUser(users_pb.DeleteUserRequest(id=author))
    assert (await fails(contents.GetContent(pb.GetContentRequest(id=made.id)))).code() is grpc.StatusCode.NOT_FOUND
