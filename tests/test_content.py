"""ContentService over the wire: every RPC but search (test_content_search.py), its happy path and each error
status, the cache in front of GetContent, and keyset paging under concurrent writes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
import redis.asyncio as redis
from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as pb
from dataservice.v1 import user_service_pb2 as users_pb
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2

from tests.grpc_errors import bad_request_fields, fails, status_of
from tests.harness import new_user

DRAFT = common_pb2.CONTENT_STATUS_DRAFT
PUBLISHED = common_pb2.CONTENT_STATUS_PUBLISHED
ARCHIVED = common_pb2.CONTENT_STATUS_ARCHIVED
MIB = 1024 * 1024


@pytest.fixture
async def author(users) -> str:
    return await new_user(users)





def content(author: str, *, metadata: dict[str, Any] | None = None, **fields: Any) -> pb.Content:
    message = pb.Content(**{"author_id": author, "title": "A title", **fields})
    if metadata is not None:
        message.metadata.update(metadata)
    return message


async def create(contents, author: str, *, request_id: str = "", **fields: Any) -> pb.Content:
    request = pb.CreateContentRequest(content=content(author, **fields), request_id=request_id)
    return (await contents.CreateContent(request)).content


async def get(contents, content_id: str) -> pb.Content:
    return (await contents.GetContent(pb.GetContentRequest(id=content_id))).content


async def update(contents, change: pb.Content, *paths: str, etag: str = "") -> pb.Content:
    request = pb.UpdateContentRequest(content=change, update_mask=mask(*paths), etag=etag)
    return (await contents.UpdateContent(request)).content


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
    assert await get(contents, made.id) == made, "read from PostgreSQL (and filling the cache)"
    assert await get(contents, made.id) == made, "read from the cache"


async def test_content_created_published_has_a_publish_time(contents, author):
    made = await create(contents, author, status=PUBLISHED)
    assert made.status == PUBLISHED and made.publish_time == made.create_time


async def test_create_content_for_an_unknown_author_is_not_found(contents):
    unknown = str(uuid.uuid4())
    error = await fails(contents.CreateContent(pb.CreateContentRequest(content=content(unknown))))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    info = error_details_pb2.ResourceInfo()
    assert any(detail.Unpack(info) for detail in status_of(error).details)
    assert (info.resource_type, info.resource_name) == ("dataservice.v1.User", unknown)


@pytest.mark.parametrize(
    "fields, bad",
    [
        ({"title": ""}, {"content.title"}),
        ({"title": "x" * 301}, {"content.title"}),
        ({"title": "two\nlines"}, {"content.title"}),
        ({"title": "bell \x07"}, {"content.title"}),
        ({"body": "x" * (MIB + 1)}, {"content.body"}),
        ({"body": "é" * (MIB // 2 + 1)}, {"content.body"}),  # fewer characters than 1 MiB, more bytes
        ({"body": "nul \x00 here"}, {"content.body"}),
        ({"tags": [f"t{index}" for index in range(33)]}, {"content.tags"}),
        ({"tags": ["ok", "x" * 65, "", "tab\there"]}, {"content.tags[1]", "content.tags[2]", "content.tags[3]"}),
        ({"metadata": {"big": "x" * (16 * 1024)}}, {"content.metadata"}),
        ({"metadata": {"nul": "a\x00b"}}, {"content.metadata"}),
        ({"metadata": {"n": float("nan")}}, {"content.metadata"}),
        ({"metadata": {"n": float("inf")}}, {"content.metadata"}),
        ({"status": 7}, {"content.status"}),  # a number no ContentStatus has, as an older or newer client sends it
        ({"author_id": "not-a-uuid"}, {"content.author_id"}),
        ({"author_id": ""}, {"content.author_id"}),
        ({"title": "", "body": "\x00", "status": 9}, {"content.title", "content.body", "content.status"}),
    ],
)
async def test_create_content_names_every_bad_field_and_writes_nothing(contents, author, db, fields, bad):
    marker = f"bad-{uuid.uuid4().hex}"
    message = content(author, **fields)
    message.tags.append(marker)
    error = await fails(contents.CreateContent(pb.CreateContentRequest(content=message)))
    assert bad_request_fields(error) == bad
    assert await db.fetchval("SELECT count(*) FROM contents WHERE $1 = ANY(tags)", marker) == 0


async def test_create_content_refuses_a_request_id_that_is_not_a_uuid(contents, author):
    request = pb.CreateContentRequest(content=content(author), request_id="nope")
    assert bad_request_fields(await fails(contents.CreateContent(request))) == {"request_id"}


async def test_create_content_with_a_request_id_is_idempotent_under_concurrent_retries(contents, author, db):
    request = pb.CreateContentRequest(content=content(author, title="Once", tags=["x"]), request_id=str(uuid.uuid4()))
    answers = await asyncio.gather(*(contents.CreateContent(request) for _ in range(8)))
    assert all(answer.content == answers[0].content for answer in answers)
    created = "SELECT count(*) FROM contents WHERE create_request_id = $1"
    assert await db.fetchval(created, uuid.UUID(request.request_id)) == 1


async def test_a_request_id_reused_for_other_content_is_invalid_argument(contents, author):
    request_id = str(uuid.uuid4())
    await create(contents, author, title="First", request_id=request_id)
    error = await fails(create(contents, author, title="Second", request_id=request_id))
    assert bad_request_fields(error) == {"request_id"}


async def test_get_content_unknown_is_not_found_and_malformed_is_invalid(contents):
    assert (await fails(get(contents, str(uuid.uuid4())))).code() is grpc.StatusCode.NOT_FOUND
    assert bad_request_fields(await fails(get(contents, "x"))) == {"id"}


# --- BatchGetContents -----------------------------------------------------------------------------------------


async def test_batch_get_answers_in_request_order_once_per_occurrence_with_missing_ids(contents, author):
    first = await create(contents, author, title="One", metadata={"k": [1, "two"]}, status=PUBLISHED)
    second = await create(contents, author, title="Two")
    missing = str(uuid.uuid4())
    ids = [second.id, missing, first.id, second.id, missing]
    answer = await contents.BatchGetContents(pb.BatchGetContentsRequest(ids=ids))
    assert list(answer.contents) == [second, first, second]
    assert list(answer.missing_ids) == [missing, missing]
    assert await contents.BatchGetContents(pb.BatchGetContentsRequest()) == pb.BatchGetContentsResponse()


async def test_batch_get_refuses_more_than_100_ids_and_ids_that_are_not_uuids(contents):
    hundred = pb.BatchGetContentsRequest(ids=[str(uuid.uuid4()) for _ in range(100)])
    assert len((await contents.BatchGetContents(hundred)).missing_ids) == 100
    too_many = pb.BatchGetContentsRequest(ids=[str(uuid.uuid4()) for _ in range(101)])
    assert bad_request_fields(await fails(contents.BatchGetContents(too_many))) == {"ids"}
    malformed = pb.BatchGetContentsRequest(ids=[str(uuid.uuid4()), "nope", ""])
    assert bad_request_fields(await fails(contents.BatchGetContents(malformed))) == {"ids[1]", "ids[2]"}


# --- ListContents ---------------------------------------------------------------------------------------------


async def list_all(contents, request: pb.ListContentsRequest) -> list[pb.Content]:
    seen: list[pb.Content] = []
    while True:
        page = await contents.ListContents(request)
        seen.extend(page.contents)
        if not page.next_page_token:
            return seen
        request.page_token = page.next_page_token


def ids(items: list[pb.Content]) -> list[str]:
    return [item.id for item in items]


async def test_list_contents_filters_by_author_tags_status_and_time(contents, users):
    label, other = tag(), tag()
    author, someone = await new_user(users), await new_user(users)
    a = await create(contents, author, tags=[label, other], status=PUBLISHED)
    b = await create(contents, author, tags=[label])
    c = await create(contents, someone, tags=[label], status=ARCHIVED)

    async def listed(**where: Any) -> set[str]:
        return set(ids(await list_all(contents, pb.ListContentsRequest(filter=pb.ContentFilter(**where)))))

    assert await listed(tags=[label]) == {a.id, b.id, c.id}
    assert await listed(tags=[label, other]) == {a.id}
    assert await listed(tags=[label, label]) == {a.id, b.id, c.id}
    assert await listed(tags=[label], author_id=author) == {a.id, b.id}
    assert await listed(tags=[label], statuses=[PUBLISHED, ARCHIVED]) == {a.id, c.id}
    assert await listed(tags=[label], create_time_after=a.create_time) == {b.id, c.id}
    assert await listed(tags=[label], create_time_before=c.create_time) == {a.id, b.id}
    # Bounds finer than PostgreSQL's microseconds keep "strictly" exact: a lies 500 ns before the first bound
    # and 500 ns after the second.
    just_after_a = timestamp_pb2.Timestamp(seconds=a.create_time.seconds, nanos=a.create_time.nanos + 500)
    assert a.id in await listed(tags=[label], create_time_before=just_after_a)
    assert a.id not in await listed(tags=[label], create_time_after=just_after_a)


ORDERS = [
    (pb.CONTENT_ORDER_UNSPECIFIED, "create_time", True),
    (pb.CONTENT_ORDER_CREATE_TIME_DESC, "create_time", True),
    (pb.CONTENT_ORDER_CREATE_TIME_ASC, "create_time", False),
    (pb.CONTENT_ORDER_UPDATE_TIME_DESC, "update_time", True),
    (pb.CONTENT_ORDER_UPDATE_TIME_ASC, "update_time", False),
]


@pytest.mark.parametrize("order, field, descending", ORDERS)
async def test_list_contents_pages_through_every_order_ties_broken_by_id(
    contents, author, db, order, field, descending
):
    label = tag()
    made = [await create(contents, author, tags=[label], title=f"n{index}") for index in range(4)]
    await update(contents, pb.Content(id=made[0].id, title="touched"), "title")
    # Rows written by one statement share their creation and update times: only the id orders them.
    tied = await db.fetch(
        "INSERT INTO contents (author_id, title, tags) SELECT $1, 'tied', ARRAY[$2] FROM generate_series(1, 3) "
        "RETURNING id::text",
        uuid.UUID(author),
        label,
    )
    request = pb.ListContentsRequest(filter=pb.ContentFilter(tags=[label]), order=order, page_size=2)
    listed = await list_all(contents, request)

    def key(item: pb.Content) -> tuple[int, int, bytes]:
        stamp = getattr(item, field)
        return (stamp.seconds, stamp.nanos, uuid.UUID(item.id).bytes)

    assert sorted(ids(listed)) == sorted(ids(made) + [row["id"] for row in tied])
    assert [key(item) for item in listed] == sorted((key(item) for item in listed), reverse=descending)


@pytest.mark.parametrize("order", [pb.CONTENT_ORDER_CREATE_TIME_DESC, pb.CONTENT_ORDER_CREATE_TIME_ASC])
async def test_list_pages_are_stable_under_inserts_and_deletes_between_pages(contents, author, order):
    label = tag()
    made = [await create(contents, author, tags=[label]) for _ in range(9)]
    request = pb.ListContentsRequest(filter=pb.ContentFilter(tags=[label]), order=order, page_size=3)
    first = await contents.ListContents(request)
    seen_and_deleted = first.contents[1].id
    unseen = [item.id for item in made if item.id not in ids(list(first.contents))]
    unseen_and_deleted = unseen[2]
    for deleted in (seen_and_deleted, unseen_and_deleted):
        await contents.DeleteContent(pb.DeleteContentRequest(id=deleted))
    inserted = [await create(contents, author, tags=[label]) for _ in range(2)]
    request.page_token = first.next_page_token
    listed = ids(list(first.contents)) + ids(await list_all(contents, request))
    assert len(listed) == len(set(listed)), "no row twice"
    throughout = set(ids(made)) - {seen_and_deleted, unseen_and_deleted}
    assert throughout <= set(listed), "no row that existed throughout is skipped"
    assert unseen_and_deleted not in listed
    # Newest first, rows inserted meanwhile sort before the pages already read; oldest first, after them.
    newcomers = set(listed) - throughout - {seen_and_deleted}
    assert newcomers == (set(ids(inserted)) if order == pb.CONTENT_ORDER_CREATE_TIME_ASC else set())


async def test_list_contents_refuses_bad_requests_and_a_token_of_another_filter_or_order(contents, author):
    cases = [
        (pb.ListContentsRequest(filter=pb.ContentFilter(author_id="x")), {"filter.author_id"}),
        (pb.ListContentsRequest(filter=pb.ContentFilter(statuses=[PUBLISHED, 0])), {"filter.statuses[1]"}),
        (pb.ListContentsRequest(filter=pb.ContentFilter(statuses=[9])), {"filter.statuses[0]"}),
        (pb.ListContentsRequest(filter=pb.ContentFilter(tags=["x" * 65])), {"filter.tags[0]"}),
        (pb.ListContentsRequest(order=42), {"order"}),
        (pb.ListContentsRequest(page_size=-1), {"page_size"}),
        (pb.ListContentsRequest(page_token="not a token"), {"page_token"}),
        (
            pb.ListContentsRequest(filter=pb.ContentFilter(create_time_after=timestamp_pb2.Timestamp(seconds=2**60))),
            {"filter.create_time_after"},
        ),
        (
            pb.ListContentsRequest(filter=pb.ContentFilter(author_id="x", statuses=[0]), order=42),
            {"filter.author_id", "filter.statuses[0]", "order"},
        ),
    ]
    for request, fields in cases:
        assert bad_request_fields(await fails(contents.ListContents(request))) == fields, request
    label = tag()
    for _ in range(3):
        await create(contents, author, tags=[label])
    page = await contents.ListContents(pb.ListContentsRequest(filter=pb.ContentFilter(tags=[label]), page_size=1))
    other_filter = pb.ListContentsRequest(filter=pb.ContentFilter(tags=[tag()]), page_token=page.next_page_token)
    assert bad_request_fields(await fails(contents.ListContents(other_filter))) == {"page_token"}
    other_order = pb.ListContentsRequest(
        filter=pb.ContentFilter(tags=[label]), order=pb.CONTENT_ORDER_CREATE_TIME_ASC, page_token=page.next_page_token
    )
    assert bad_request_fields(await fails(contents.ListContents(other_order))) == {"page_token"}
    other_size = pb.ListContentsRequest(
        filter=pb.ContentFilter(tags=[label]), page_size=5, page_token=page.next_page_token
    )
    assert len((await contents.ListContents(other_size)).contents) == 2, "the page size may change between pages"


# --- UpdateContent and DeleteContent --------------------------------------------------------------------------


async def test_update_content_changes_only_the_masked_fields_and_moves_the_etag(contents, author):
    made = await create(contents, author, title="Old", body="Body", tags=["x"], metadata={"keep": True})
    change = content(author, title="New", body="ignored", tags=["y", "y", "z"], metadata={"k": "v"})
    change.id = made.id
    updated = await update(contents, change, "title", "tags", "metadata")
    assert (updated.title, updated.body, list(updated.tags)) == ("New", "Body", ["y", "z"])
    assert dict(updated.metadata) == {"k": "v"}
    assert updated.etag != made.etag and updated.create_time == made.create_time
    assert updated.update_time.ToNanoseconds() > made.update_time.ToNanoseconds()
    cleared = await update(contents, pb.Content(id=made.id), "tags", "metadata", "body")
    assert (list(cleared.tags), dict(cleared.metadata), cleared.body) == ([], {}, "")


async def test_publish_time_is_set_by_the_first_publish_and_kept_after(contents, author):
    made = await create(contents, author)

    async def set_status(status: int) -> pb.Content:
        return await update(contents, pb.Content(id=made.id, status=status), "status")

    published = await set_status(PUBLISHED)
    assert published.HasField("publish_time")
    archived = await set_status(ARCHIVED)
    again = await set_status(PUBLISHED)
    assert archived.publish_time == again.publish_time == published.publish_time


async def test_content_never_published_may_return_to_draft(contents, author):
    made = await create(contents, author, status=ARCHIVED)
    assert (await update(contents, pb.Content(id=made.id, status=DRAFT), "status")).status == DRAFT


@pytest.mark.parametrize("path", [[PUBLISHED], [PUBLISHED, ARCHIVED]])
async def test_content_once_published_cannot_return_to_draft(contents, author, path):
    made = await create(contents, author)
    for status in path:
        made = await update(contents, pb.Content(id=made.id, status=status), "status")
    back = pb.Content(id=made.id, status=DRAFT, title="changed too")
    error = await fails(update(contents, back, "status", "title"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert await get(contents, made.id) == made, "nothing of the refused update was written"


async def test_update_content_names_bad_fields_and_writes_nothing(contents, author):
    made = await create(contents, author)

    def request(paths: list[str], request_etag: str = "", **fields: Any) -> pb.UpdateContentRequest:
        change = pb.Content(**{"id": made.id, **fields})
        return pb.UpdateContentRequest(content=change, update_mask=mask(*paths), etag=request_etag)

    cases = [
        (request([], title="x"), {"update_mask"}),
        (request(["author_id"]), {"update_mask"}),
        (request(["title", "create_time"], title="x"), {"update_mask"}),
        (request(["status"]), {"content.status"}),
        (request(["status"], status=9), {"content.status"}),
        (request(["title"]), {"content.title"}),
        (request(["title", "body"], title="fine", body="\x00"), {"content.body"}),
        (request(["tags"], tags=["ok", "a\nb"]), {"content.tags[1]"}),
        (request(["title"], id="x", title="t"), {"content.id"}),
        (request(["title"], title="t", etag="zz"), {"content.etag"}),
        (request(["title"], "zz", title="t"), {"etag"}),
        (request(["title"], str(int(made.etag) + 1), title="t", etag=made.etag), {"etag"}),  # the two etags disagree
    ]
    for bad, fields in cases:
        assert bad_request_fields(await fails(contents.UpdateContent(bad))) == fields, bad
    assert await get(contents, made.id) == made


async def test_update_content_with_a_stale_etag_is_aborted_on_the_content_or_the_request(contents, author):
    made = await create(contents, author)
    current = await update(contents, pb.Content(id=made.id, title="A", etag=made.etag), "title")
    stale_on_content = pb.Content(id=made.id, title="B", etag=made.etag)
    assert (await fails(update(contents, stale_on_content, "title"))).code() is grpc.StatusCode.ABORTED
    stale_on_request = pb.Content(id=made.id, title="B")
    assert (await fails(update(contents, stale_on_request, "title", etag=made.etag))).code() is grpc.StatusCode.ABORTED
    assert (await update(contents, pb.Content(id=made.id, title="C"), "title", etag=current.etag)).title == "C"


async def test_of_two_concurrent_updaters_with_one_etag_exactly_one_wins(contents, author):
    made = await create(contents, author)
    outcomes = await asyncio.gather(
        *(update(contents, pb.Content(id=made.id, title=title, etag=made.etag), "title") for title in ("A", "B")),
        return_exceptions=True,
    )
    won = [outcome for outcome in outcomes if isinstance(outcome, pb.Content)]
    lost = [outcome for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 1 and lost[0].code() is grpc.StatusCode.ABORTED
    assert await get(contents, made.id) == won[0]


async def test_update_and_delete_of_unknown_content_are_not_found(contents):
    unknown = str(uuid.uuid4())
    updating = await fails(update(contents, pb.Content(id=unknown, title="t"), "title"))
    deleting = await fails(contents.DeleteContent(pb.DeleteContentRequest(id=unknown)))
    assert updating.code() is deleting.code() is grpc.StatusCode.NOT_FOUND
    malformed = pb.DeleteContentRequest(id="x", etag="y")
    assert bad_request_fields(await fails(contents.DeleteContent(malformed))) == {"id", "etag"}


async def test_delete_content_with_a_stale_etag_is_aborted_and_with_the_current_one_deletes(contents, author):
    made = await create(contents, author)
    current = await update(contents, pb.Content(id=made.id, title="t"), "title")
    error = await fails(contents.DeleteContent(pb.DeleteContentRequest(id=made.id, etag=made.etag)))
    assert error.code() is grpc.StatusCode.ABORTED
    assert await get(contents, made.id) == current
    await contents.DeleteContent(pb.DeleteContentRequest(id=made.id, etag=current.etag))
    assert (await fails(get(contents, made.id))).code() is grpc.StatusCode.NOT_FOUND


# --- The cache ------------------------------------------------------------------------------------------------


async def read_twice(contents, cache: redis.Redis, content_id: str) -> pb.Content:
    """Reads content so that the cache holds it: the first read fills the entry, the second is served by it."""
    first = await get(contents, content_id)
    assert await cache.exists(f"dataservice:v3:content:{content_id}"), "the content is cached"
    assert await get(contents, content_id) == first
    return first


async def test_get_content_never_answers_a_cached_copy_older_than_an_update_or_delete(contents, author, cache):
    made = await create(contents, author, title="Before")
    await read_twice(contents, cache, made.id)
    updated = await update(contents, pb.Content(id=made.id, title="After"), "title")
    assert await get(contents, made.id) == updated
    await read_twice(contents, cache, made.id)
    await contents.DeleteContent(pb.DeleteContentRequest(id=made.id))
    assert (await fails(get(contents, made.id))).code() is grpc.StatusCode.NOT_FOUND


async def test_deleting_a_user_deletes_their_content_and_its_cached_copy(contents, users, cache):
    author = await new_user(users)
    made = await create(contents, author)
    await read_twice(contents, cache, made.id)
    await users.DeleteUser(users_pb.DeleteUserRequest(id=author))
    assert (await fails(get(contents, made.id))).code() is grpc.StatusCode.NOT_FOUND
