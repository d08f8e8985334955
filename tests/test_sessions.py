"""SessionService over the wire: every RPC, its happy path and each error status, tokens that never leave the
caller's hands, expiry and revocation that hold also for cached sessions, and the background purge.

Times are moved with SQL on the server's own database (``app.dsn``), never waited for. SQL that changes a row
behind the service's back does not invalidate the cache, which some tests use on purpose to show where an
answer came from.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import secrets
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
import redis.asyncio as redis
from dataservice.v1 import session_service_pb2 as pb
from dataservice.v1 import session_service_pb2_grpc
from dataservice.v1 import user_service_pb2 as users_pb
from dataservice.v1 import user_service_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from server.config import ConfigError, Settings
from server.logs import JsonFormatter
from server.store.sessions import PURGE_LOCK_KEY
from tests.backends import free_port
from tests.grpc_errors import bad_request_fields, fails, status_of
from tests.harness import new_user, settings_for

DAY = timedelta(days=1)
ABSOLUTE_LIFETIME = timedelta(days=30)


@pytest.fixture(scope="module")
def sessions(channel: grpc.aio.Channel) -> session_service_pb2_grpc.SessionServiceStub:
    return session_service_pb2_grpc.SessionServiceStub(channel)


@pytest.fixture
async def user_id(users) -> str:
    return await new_user(users)





def create_request(user_id: str, *, ttl: timedelta | None = None, **fields: str) -> pb.CreateSessionRequest:
    request = pb.CreateSessionRequest(
        session=pb.Session(
            user_id=user_id,
            user_agent=fields.pop("user_agent", "Mozilla/5.0 (pytest)"),
            ip_address=fields.pop("ip_address", "192.0.2.10"),
        ),
        **fields,
    )
    if ttl is not None:
        request.ttl.FromTimedelta(ttl)
    return request


async def login(sessions, user_id: str, **fields) -> pb.CreateSessionResponse:
    return await sessions.CreateSession(create_request(user_id, **fields))


async def check(sessions, token: str) -> pb.Session:
    return (await sessions.GetSession(pb.GetSessionRequest(token=token))).session


async def refused(call) -> str:
    """Asserts that ``call`` was refused UNAUTHENTICATED; returns the message, which must say nothing more."""
    error = await fails(call)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED, (error.code(), error.details())
    return error.details()


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status_of(error).details if detail.Is(info.DESCRIPTOR))
    return info.reason


def sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def cache_key(token: str) -> str:
    """The documented key of a cached session: the hex SHA-256 of its token, never the token."""
    return f"dataservice:v3:session:{sha256(token).hex()}"


def at(timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)


async def rewrite_cached(cache: redis.Redis, token: str, change: Callable[[pb.Session], None]) -> None:
    """Changes the cached Session of ``token`` in place, keeping its epoch tag and its lifetime in Redis."""
    key = cache_key(token)
    stored = await cache.get(key)
    assert stored is not None, "the reads before filled the cache"
    tag, _, serialized = stored.partition(b"|")
    session = pb.Session.FromString(serialized)
    change(session)
    await cache.set(key, tag + b"|" + session.SerializeToString(), keepttl=True)


# --- CreateSession --------------------------------------------------------------------------------------------


async def test_create_session_returns_the_session_and_a_token_that_authenticates_it(sessions, user_id):
    created = await login(sessions, user_id, user_agent="curl/8.5", ip_address="2001:db8::7")
    session = created.session
    assert uuid.UUID(session.id) and session.user_id == user_id
    assert (session.user_agent, session.ip_address) == ("curl/8.5", "2001:db8::7")
    assert session.last_seen_time == session.create_time
    assert at(session.expire_time) - at(session.create_time) == DAY, "the default ttl is 24 hours"
    assert 32 <= len(created.token) <= 128 and created.token.isascii()
    assert set(created.token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert await check(sessions, created.token) == session
    assert created.token not in str(session)


async def test_create_session_takes_a_ttl_from_one_minute_to_thirty_days(sessions, user_id):
    for ttl in (timedelta(minutes=1), timedelta(hours=3), ABSOLUTE_LIFETIME):
        session = (await login(sessions, user_id, ttl=ttl)).session
        assert at(session.expire_time) - at(session.create_time) == ttl


async def test_create_session_without_user_agent_or_address_leaves_them_empty(sessions, user_id):
    created = await login(sessions, user_id, user_agent="", ip_address="")
    assert (created.session.user_agent, created.session.ip_address) == ("", "")
    assert await check(sessions, created.token) == created.session


def duration(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize(
    ("session", "ttl", "request_id", "fields"),
    [
        (pb.Session(), None, "", {"session.user_id"}),
        (pb.Session(user_id="not-a-uuid"), None, "", {"session.user_id"}),
        (pb.Session(user_id="{USER}"), duration(59), "", {"ttl"}),
        (pb.Session(user_id="{USER}"), duration(59, 999_999_999), "", {"ttl"}),
        (pb.Session(user_id="{USER}"), duration(30 * 86400, 1), "", {"ttl"}),
        (pb.Session(user_id="{USER}"), duration(-3600), "", {"ttl"}),
        (pb.Session(user_id="{USER}"), duration(0), "", {"ttl"}),
        (pb.Session(user_id="{USER}"), duration(3600, -1), "", {"ttl"}),
        (pb.Session(user_id="{USER}"), duration(3600, 1_000_000_000), "", {"ttl"}),
        (pb.Session(user_id="{USER}"), duration(315_576_000_000), "", {"ttl"}),
        (pb.Session(user_id="{USER}", user_agent="x" * 513), None, "", {"session.user_agent"}),
        (pb.Session(user_id="{USER}", user_agent="evil\x00agent"), None, "", {"session.user_agent"}),
        (pb.Session(user_id="{USER}", user_agent="\x1b[31mred"), None, "", {"session.user_agent"}),
        (pb.Session(user_id="{USER}", ip_address="999.1.1.1"), None, "", {"session.ip_address"}),
        (pb.Session(user_id="{USER}", ip_address="192.0.2.0/24"), None, "", {"session.ip_address"}),
        (pb.Session(user_id="{USER}", ip_address="fe80::1%eth0"), None, "", {"session.ip_address"}),
        (pb.Session(user_id="{USER}", ip_address="localhost"), None, "", {"session.ip_address"}),
        (pb.Session(user_id="{USER}", ip_address=" 192.0.2.1"), None, "", {"session.ip_address"}),
        (pb.Session(user_id="{USER}"), None, "not-a-uuid", {"request_id"}),
        (
            pb.Session(user_id="x", user_agent="\x00", ip_address="nope"),
            duration(1),
            "x",
            {"session.user_id", "ttl", "session.user_agent", "session.ip_address", "request_id"},
        ),
    ],
)
async def test_create_session_rejects_each_bad_field_by_name(sessions, user_id, session, ttl, request_id, fields):
    if session.user_id == "{USER}":
        session.user_id = user_id
    request = pb.CreateSessionRequest(session=session, request_id=request_id)
    if ttl is not None:
        request.ttl.CopyFrom(ttl)
    assert bad_request_fields(await fails(sessions.CreateSession(request))) == fields


async def test_create_session_accepts_the_longest_user_agent(sessions, user_id):
    created = await login(sessions, user_id, user_agent="a" * 512)
    assert len(created.session.user_agent) == 512


async def test_create_session_for_an_unknown_user_is_not_found(sessions):
    missing = str(uuid.uuid4())
    error = await fails(login(sessions, missing))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    info = error_details_pb2.ResourceInfo()
    assert any(detail.Unpack(info) for detail in status_of(error).details if detail.Is(info.DESCRIPTOR))
    assert (info.resource_type, info.resource_name) == ("dataservice.v1.User", missing)


# --- Tokens stay with their holder ----------------------------------------------------------------------------


async def test_the_table_keeps_only_the_sha256_of_the_token(sessions, user_id, db):
    created = await login(sessions, user_id, request_id=str(uuid.uuid4()))
    await check(sessions, created.token)
    rows = await db.fetch("SELECT s::text AS row, token_hash FROM sessions s WHERE user_id = $1", uuid.UUID(user_id))
    assert len(rows) == 1
    assert created.token not in rows[0]["row"]
    assert rows[0]["token_hash"] == sha256(created.token)


@pytest.fixture
def json_log(caplog) -> Iterator[io.StringIO]:
    """Every log line at DEBUG and above, as the server writes them (JSON, formatted within the call)."""
    caplog.set_level(logging.DEBUG)  # before the server starts: it decides on its access log at start
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    yield lines
    logging.getLogger().removeHandler(handler)


async def test_tokens_reach_no_log_line_metric_or_cache_key(database_url, redis_url, start_app, cache, json_log):
    """Every RPC, failing ones too, on a server logging at DEBUG (an access line per call) with metrics on."""
    metrics_port = free_port()
    app = await start_app(settings_for(database_url, REDIS_URL=redis_url, METRICS_PORT=str(metrics_port)))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = session_service_pb2_grpc.SessionServiceStub(channel)
        user = await new_user(user_service_pb2_grpc.UserServiceStub(channel))
        request_id = str(uuid.uuid4())
        first = await login(stub, user, request_id=request_id)
        again = await login(stub, user, request_id=request_id)
        tokens = [first.token, again.token]
        await check(stub, again.token)
        await check(stub, again.token)
        await stub.RefreshSession(pb.RefreshSessionRequest(token=again.token))
        await refused(stub.GetSession(pb.GetSessionRequest(token=first.token)))
        await fails(stub.DeleteSession(pb.DeleteSessionRequest(token=first.token)))
        await stub.DeleteSession(pb.DeleteSessionRequest(token=again.token))
        await refused(stub.RefreshSession(pb.RefreshSessionRequest(token=again.token)))
    logged = json_log.getvalue()
    assert '"method": "/dataservice.v1.SessionService/RefreshSession"' in logged, "the access log lines were captured"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read())
    assert b"SessionService" in text
    cache_keys = [key async for key in cache.scan_iter(match="dataservice:*")]
    for token in tokens:
        assert token not in logged
        assert token.encode() not in text
        assert not any(token.encode() in key for key in cache_keys)


# --- GetSession -----------------------------------------------------------------------------------------------


async def test_unknown_malformed_revoked_and_expired_tokens_are_refused_alike(sessions, user_id, db):
    revoked = await login(sessions, user_id)
    await sessions.DeleteSession(pb.DeleteSessionRequest(id=revoked.session.id))
    expired = await login(sessions, user_id)
    await db.execute(
        "UPDATE sessions SET created_at = now() - interval '2 days', expires_at = now() - interval '1 second'"
        " WHERE id = $1",
        uuid.UUID(expired.session.id),
    )
    tokens = {
        "unknown": secrets.token_urlsafe(32),
        "empty": "",
        "too long": "A" * 100_000,
        "not URL-safe": "abc+/=def" * 5,
        "not ASCII": "jeton-ünïcødé-🔑",
        "revoked": revoked.token,
        "expired": expired.token,
    }
    messages = set()
    for name, token in tokens.items():
        messages.add(await refused(sessions.GetSession(pb.GetSessionRequest(token=token))))
        messages.add(await refused(sessions.RefreshSession(pb.RefreshSessionRequest(token=token))))
    assert len(messages) == 1, messages


async def test_a_revoked_session_is_refused_at_once_even_when_cached(sessions, user_id, cache):
    created = await login(sessions, user_id)
    await check(sessions, created.token)
    await check(sessions, created.token)  # served from the cache
    assert await cache.exists(cache_key(created.token))
    await sessions.DeleteSession(pb.DeleteSessionRequest(id=created.session.id))
    await refused(sessions.GetSession(pb.GetSessionRequest(token=created.token)))


async def test_log_out_by_token_is_refused_at_once_even_when_cached(sessions, user_id, cache):
    created = await login(sessions, user_id)
    await check(sessions, created.token)
    assert await cache.exists(cache_key(created.token))
    await sessions.DeleteSession(pb.DeleteSessionRequest(token=created.token))
    await refused(sessions.GetSession(pb.GetSessionRequest(token=created.token)))


async def test_log_out_everywhere_is_refused_at_once_even_when_cached(sessions, user_id, cache):
    logins = [await login(sessions, user_id) for _ in range(3)]
    for created in logins:
        await check(sessions, created.token)
        assert await cache.exists(cache_key(created.token))
    result = await sessions.DeleteUserSessions(pb.DeleteUserSessionsRequest(user_id=user_id))
    assert result.deleted_count == 3
    for created in logins:
        await refused(sessions.GetSession(pb.GetSessionRequest(token=created.token)))


async def test_a_cached_session_is_never_served_past_its_expiry(sessions, user_id, db, cache):
    created = await login(sessions, user_id)
    await check(sessions, created.token)  # fills the cache
    ended = await db.fetchval(
        "UPDATE sessions SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 second'"
        " WHERE id = $1 RETURNING expires_at",
        uuid.UUID(created.session.id),
    )
    # The row expired behind the service's back, so nothing was invalidated: the cached entry, which says the
    # session lasts a day, still answers. This shows the next answer comes from the cache.
    assert await check(sessions, created.token) == created.session
    # The entry as it would be had it been filled from the row as it is now: expire_time has passed.
    await rewrite_cached(cache, created.token, lambda session: session.expire_time.FromDatetime(ended))
    await refused(sessions.GetSession(pb.GetSessionRequest(token=created.token)))


async def test_a_cached_session_lives_no_longer_in_redis_than_the_session_has_left(sessions, user_id, db, cache):
    created = await login(sessions, user_id)
    await db.execute("UPDATE sessions SET expires_at = now() + interval '20 seconds' WHERE id = $1",
                     uuid.UUID(created.session.id))
    await check(sessions, created.token)
    lifetime_ms = await cache.pttl(cache_key(created.token))
    assert 0 < lifetime_ms <= 20_000, "filled for at most the 20 seconds the session had left, not CACHE_TTL_SECONDS"


async def last_seen(db: asyncpg.Connection, session: pb.Session) -> datetime:
    return await db.fetchval("SELECT last_seen_at FROM sessions WHERE id = $1", uuid.UUID(session.id))


async def test_reads_of_a_fresh_session_write_nothing(sessions, user_id, db):
    created = await login(sessions, user_id)
    await check(sessions, created.token)
    await check(sessions, created.token)
    assert await last_seen(db, created.session) == at(created.session.create_time)


async def test_last_seen_is_written_at_most_once_a_minute(sessions, user_id, db):
    created = await login(sessions, user_id)
    minutes_ago = await db.fetchval(
        "UPDATE sessions SET last_seen_at = now() - interval '2 minutes' WHERE id = $1 RETURNING last_seen_at",
        uuid.UUID(created.session.id),
    )
    first = await check(sessions, created.token)
    written = await last_seen(db, created.session)
    assert written > minutes_ago and at(first.last_seen_time) == written
    second = await check(sessions, created.token)
    third = await check(sessions, created.token)  # from the cache, which the second read filled
    assert await last_seen(db, created.session) == written, "three reads, one write"
    assert second == third == first


async def test_a_cache_hit_a_minute_after_the_last_write_records_last_seen(sessions, user_id, db, cache):
    created = await login(sessions, user_id)
    await check(sessions, created.token)  # fills the cache
    minutes_ago = await db.fetchval(
        "UPDATE sessions SET last_seen_at = now() - interval '2 minutes' WHERE id = $1 RETURNING last_seen_at",
        uuid.UUID(created.session.id),
    )
    await rewrite_cached(cache, created.token, lambda session: session.last_seen_time.FromDatetime(minutes_ago))
    seen = await check(sessions, created.token)
    written = await last_seen(db, created.session)
    assert written > minutes_ago and at(seen.last_seen_time) == written
    assert not await cache.exists(cache_key(created.token)), "the write invalidated the entry"
    assert await check(sessions, created.token) == seen
    assert await last_seen(db, created.session) == written


# --- RefreshSession -------------------------------------------------------------------------------------------


async def test_refresh_slides_the_expiry_by_the_ttl_and_records_last_seen(sessions, user_id, db):
    ttl = timedelta(hours=1)
    created = await login(sessions, user_id, ttl=ttl)
    await check(sessions, created.token)  # cached: the refresh must replace what the cache holds
    await db.execute(
        "UPDATE sessions SET created_at = now() - interval '10 days', expires_at = now() + interval '1 minute',"
        " last_seen_at = now() - interval '10 minutes' WHERE id = $1",
        uuid.UUID(created.session.id),
    )
    before = await db.fetchval("SELECT clock_timestamp()")
    refreshed = (await sessions.RefreshSession(pb.RefreshSessionRequest(token=created.token))).session
    after = await db.fetchval("SELECT clock_timestamp()")
    assert before + ttl <= at(refreshed.expire_time) <= after + ttl
    assert before <= at(refreshed.last_seen_time) <= after
    assert await check(sessions, created.token) == refreshed


async def test_refresh_never_moves_the_expiry_past_thirty_days_after_creation(sessions, user_id, db):
    created = await login(sessions, user_id, ttl=timedelta(hours=1))
    await db.execute(
        "UPDATE sessions SET created_at = now() - interval '30 days' + interval '10 minutes',"
        " expires_at = now() + interval '1 minute' WHERE id = $1",
        uuid.UUID(created.session.id),
    )
    refreshed = (await sessions.RefreshSession(pb.RefreshSessionRequest(token=created.token))).session
    assert await db.fetchval(
        "SELECT expires_at = created_at + interval '30 days' FROM sessions WHERE id = $1", uuid.UUID(created.session.id)
    )
    assert at(refreshed.expire_time) - at(refreshed.create_time) == ABSOLUTE_LIFETIME

    await db.execute(
        "UPDATE sessions SET created_at = now() - interval '30 days' - interval '1 minute',"
        " expires_at = now() - interval '1 minute' WHERE id = $1",
        uuid.UUID(created.session.id),
    )
    await refused(sessions.RefreshSession(pb.RefreshSessionRequest(token=created.token)))


# --- DeleteSession --------------------------------------------------------------------------------------------


async def test_delete_session_by_id_within_its_users_scope(sessions, users, user_id):
    created = await login(sessions, user_id)
    other_user = await new_user(users)
    theirs = await fails(sessions.DeleteSession(pb.DeleteSessionRequest(id=created.session.id, user_id=other_user)))
    assert theirs.code() is grpc.StatusCode.NOT_FOUND
    assert await check(sessions, created.token) == created.session, "someone else's session is left alone"
    await sessions.DeleteSession(pb.DeleteSessionRequest(id=created.session.id, user_id=user_id))
    await refused(sessions.GetSession(pb.GetSessionRequest(token=created.token)))
    again = await fails(sessions.DeleteSession(pb.DeleteSessionRequest(id=created.session.id)))
    assert again.code() is grpc.StatusCode.NOT_FOUND


async def test_delete_session_by_token_within_its_users_scope(sessions, users, user_id):
    created = await login(sessions, user_id)
    theirs = await fails(sessions.DeleteSession(pb.DeleteSessionRequest(token=created.token, user_id=await new_user(users))))
    assert theirs.code() is grpc.StatusCode.NOT_FOUND
    await sessions.DeleteSession(pb.DeleteSessionRequest(token=created.token, user_id=user_id))
    again = await fails(sessions.DeleteSession(pb.DeleteSessionRequest(token=created.token)))
    assert again.code() is grpc.StatusCode.NOT_FOUND
    assert created.token not in again.details()


async def test_delete_session_of_no_live_session_is_not_found(sessions, user_id, db):
    expired = await login(sessions, user_id)
    await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1",
                     uuid.UUID(expired.session.id))
    for request in (
        pb.DeleteSessionRequest(id=str(uuid.uuid4())),
        pb.DeleteSessionRequest(token=secrets.token_urlsafe(32)),
        pb.DeleteSessionRequest(token=""),
        pb.DeleteSessionRequest(id=expired.session.id),
        pb.DeleteSessionRequest(token=expired.token),
    ):
        assert (await fails(sessions.DeleteSession(request))).code() is grpc.StatusCode.NOT_FOUND, request


async def test_delete_session_rejects_each_bad_field_by_name(sessions):
    cases = [
        (pb.DeleteSessionRequest(), {"session"}),
        (pb.DeleteSessionRequest(user_id=str(uuid.uuid4())), {"session"}),
        (pb.DeleteSessionRequest(id=""), {"id"}),
        (pb.DeleteSessionRequest(id="not-a-uuid"), {"id"}),
        (pb.DeleteSessionRequest(token="t", user_id="nope"), {"user_id"}),
        (pb.DeleteSessionRequest(user_id="nope"), {"session", "user_id"}),
    ]
    for request, fields in cases:
        assert bad_request_fields(await fails(sessions.DeleteSession(request))) == fields, request


# --- DeleteUserSessions ---------------------------------------------------------------------------------------


async def test_delete_user_sessions_revokes_all_but_the_one_kept_and_counts_them(sessions, users, user_id):
    keep, *others = [await login(sessions, user_id) for _ in range(3)]
    bystander = await login(sessions, await new_user(users))
    result = await sessions.DeleteUserSessions(
        pb.DeleteUserSessionsRequest(user_id=user_id, except_session_id=keep.session.id)
    )
    assert result.deleted_count == 2
    assert await check(sessions, keep.token) == keep.session
    assert await check(sessions, bystander.token) == bystander.session
    for created in others:
        await refused(sessions.GetSession(pb.GetSessionRequest(token=created.token)))
    again = await sessions.DeleteUserSessions(pb.DeleteUserSessionsRequest(user_id=user_id, except_session_id=keep.session.id))
    assert again.deleted_count == 0
    unknown = await sessions.DeleteUserSessions(pb.DeleteUserSessionsRequest(user_id=str(uuid.uuid4())))
    assert unknown.deleted_count == 0


async def test_delete_user_sessions_rejects_each_bad_field_by_name(sessions):
    error = await fails(sessions.DeleteUserSessions(pb.DeleteUserSessionsRequest(except_session_id="x")))
    assert bad_request_fields(error) == {"user_id", "except_session_id"}


# --- Retries of CreateSession (AIP-155) -----------------------------------------------------------------------


async def test_a_retry_returns_the_same_session_with_a_new_token_and_the_old_one_stops_at_once(
    sessions, user_id, cache
):
    request_id = str(uuid.uuid4())
    first = await login(sessions, user_id, request_id=request_id)
    await check(sessions, first.token)
    assert await cache.exists(cache_key(first.token))
    again = await login(sessions, user_id, request_id=request_id)
    assert again.session == first.session and again.token != first.token
    await refused(sessions.GetSession(pb.GetSessionRequest(token=first.token)))
    assert await check(sessions, again.token) == first.session


async def test_a_retry_spelling_the_address_differently_is_the_same_request(sessions, user_id):
    request_id = str(uuid.uuid4())
    first = await login(sessions, user_id, request_id=request_id, ip_address="::ffff:192.0.2.1")
    again = await login(sessions, user_id, request_id=request_id, ip_address="::FFFF:c000:0201")
    assert again.session.id == first.session.id


async def test_concurrent_retries_make_one_session_and_only_the_last_token_works(sessions, user_id, db):
    request_id = str(uuid.uuid4())
    answers = await asyncio.gather(*(login(sessions, user_id, request_id=request_id) for _ in range(8)))
    assert len({answer.session.id for answer in answers}) == 1
    assert len({answer.token for answer in answers}) == 8
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE create_request_id = $1", uuid.UUID(request_id)) == 1

    working = []
    for answer in answers:
        try:
            await check(sessions, answer.token)
            working.append(answer.token)
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert len(working) == 1, "exactly one token works"
    stored = await db.fetchval("SELECT token_hash FROM sessions WHERE create_request_id = $1", uuid.UUID(request_id))
    assert stored == sha256(working[0]), "the one that works is the last issued"


async def test_a_request_id_reused_with_other_fields_is_invalid_argument(sessions, users, user_id):
    request_id = str(uuid.uuid4())
    first = await login(sessions, user_id, request_id=request_id, ttl=timedelta(hours=2))
    different = [
        dict(user_id=await new_user(users), ttl=timedelta(hours=2)),
        dict(user_id=user_id, ttl=timedelta(hours=3)),
        dict(user_id=user_id, ttl=timedelta(hours=2), user_agent="another agent"),
        dict(user_id=user_id, ttl=timedelta(hours=2), ip_address="192.0.2.99"),
    ]
    for fields in different:
        error = await fails(login(sessions, fields.pop("user_id"), request_id=request_id, **fields))
        assert bad_request_fields(error) == {"request_id"} and reason_of(error) == "REQUEST_ID_REUSED", fields
    again = await login(sessions, user_id, request_id=request_id.upper(), ttl=timedelta(hours=2))
    assert again.session.id == first.session.id


@pytest.mark.parametrize("ending", ["revoked", "expired"])
async def test_a_retry_after_the_session_ended_is_aborted_and_never_revives_it(sessions, user_id, db, ending):
    request_id = str(uuid.uuid4())
    first = await login(sessions, user_id, request_id=request_id)
    session_id = uuid.UUID(first.session.id)
    if ending == "revoked":
        await sessions.DeleteSession(pb.DeleteSessionRequest(id=first.session.id))
    else:
        await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1", session_id)
    before = await db.fetchrow("SELECT s::text AS row FROM sessions s WHERE id = $1", session_id)

    error = await fails(login(sessions, user_id, request_id=request_id))
    assert error.code() is grpc.StatusCode.ABORTED and reason_of(error) == "SESSION_ENDED"
    assert await db.fetchrow("SELECT s::text AS row FROM sessions s WHERE id = $1", session_id) == before
    await refused(sessions.GetSession(pb.GetSessionRequest(token=first.token)))
    fresh = await login(sessions, user_id, request_id=str(uuid.uuid4()))
    assert fresh.session.id != first.session.id, "a new request_id logs in again"


# --- ListSessions ---------------------------------------------------------------------------------------------


async def list_all(sessions, user_id: str, page_size: int, between_pages=None) -> list[pb.Session]:
    seen: list[pb.Session] = []
    token = ""
    while True:
        page = await sessions.ListSessions(pb.ListSessionsRequest(user_id=user_id, page_size=page_size, page_token=token))
        assert len(page.sessions) <= page_size
        seen.extend(page.sessions)
        token = page.next_page_token
        if not token:
            return seen
        if between_pages is not None:
            await between_pages()


async def test_list_sessions_shows_live_sessions_newest_first(sessions, user_id, db):
    live = [await login(sessions, user_id) for _ in range(3)]
    revoked = await login(sessions, user_id)
    await sessions.DeleteSession(pb.DeleteSessionRequest(id=revoked.session.id))
    expired = await login(sessions, user_id)
    await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1",
                     uuid.UUID(expired.session.id))
    listed = (await sessions.ListSessions(pb.ListSessionsRequest(user_id=user_id))).sessions
    assert list(listed) == [created.session for created in reversed(live)]


async def test_list_sessions_pages_are_stable_under_concurrent_logins_and_revocations(sessions, user_id):
    throughout = [await login(sessions, user_id) for _ in range(7)]
    doomed = throughout.pop(3)
    revoked = False

    async def write_between_pages() -> None:
        nonlocal revoked
        await login(sessions, user_id)
        if not revoked:
            await sessions.DeleteSession(pb.DeleteSessionRequest(id=doomed.session.id))
            revoked = True

    seen = await list_all(sessions, user_id, page_size=2, between_pages=write_between_pages)
    ids = [session.id for session in seen]
    assert len(ids) == len(set(ids)), "no session appears on two pages"
    assert {created.session.id for created in throughout} <= set(ids), "every session live throughout is listed"
    created_times = [(at(session.create_time), session.id) for session in seen]
    assert created_times == sorted(created_times, reverse=True), "newest first"


async def test_list_sessions_of_an_unknown_user_is_empty(sessions):
    page = await sessions.ListSessions(pb.ListSessionsRequest(user_id=str(uuid.uuid4())))
    assert list(page.sessions) == [] and page.next_page_token == ""


async def test_a_page_token_is_valid_only_for_the_user_it_was_issued_for(sessions, users, user_id):
    for _ in range(2):
        await login(sessions, user_id)
    page = await sessions.ListSessions(pb.ListSessionsRequest(user_id=user_id, page_size=1))
    assert page.next_page_token
    other = await new_user(users)
    error = await fails(sessions.ListSessions(pb.ListSessionsRequest(user_id=other, page_token=page.next_page_token)))
    assert bad_request_fields(error) == {"page_token"}


async def test_list_sessions_rejects_each_bad_field_by_name(sessions):
    cases = [
        (pb.ListSessionsRequest(), {"user_id"}),
        (pb.ListSessionsRequest(user_id="x"), {"user_id"}),
        (pb.ListSessionsRequest(user_id=str(uuid.uuid4()), page_size=-1), {"page_size"}),
        (pb.ListSessionsRequest(user_id=str(uuid.uuid4()), page_token="garbage"), {"page_token"}),
    ]
    for request, fields in cases:
        assert bad_request_fields(await fails(sessions.ListSessions(request))) == fields, request


# --- Deleting a user ------------------------------------------------------------------------------------------


async def test_deleting_a_user_deletes_their_sessions(sessions, users, user_id, db):
    created = await login(sessions, user_id)
    await users.DeleteUser(users_pb.DeleteUserRequest(id=user_id))
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE id = $1", uuid.UUID(created.session.id)) == 0
    await refused(sessions.GetSession(pb.GetSessionRequest(token=created.token)))


async def test_a_cached_session_of_a_deleted_user_is_refused_at_once(sessions, users, user_id, cache):
    """The foreign key deletes the sessions in PostgreSQL; their cached entries must go with them."""
    created = await login(sessions, user_id)
    await sessions.GetSession(pb.GetSessionRequest(token=created.token))
    await sessions.GetSession(pb.GetSessionRequest(token=created.token))
    token_hash = hashlib.sha256(created.token.encode()).digest()
    assert await cache.exists(f"dataservice:v3:session:{token_hash.hex()}"), "the session is cached"
    await users.DeleteUser(users_pb.DeleteUserRequest(id=user_id))
    await refused(sessions.GetSession(pb.GetSessionRequest(token=created.token)))


async def test_a_user_delete_with_a_stale_etag_keeps_the_user_and_their_sessions(sessions, users, user_id):
    created = await login(sessions, user_id)
    user = (await users.GetUser(users_pb.GetUserRequest(id=user_id))).user
    error = await fails(users.DeleteUser(users_pb.DeleteUserRequest(id=user_id, etag=str(int(user.etag) + 1))))
    assert error.code() is grpc.StatusCode.ABORTED
    session = (await sessions.GetSession(pb.GetSessionRequest(token=created.token))).session
    assert session.id == created.session.id


# --- The purge of ended sessions ------------------------------------------------------------------------------


async def ended_long_ago(db: asyncpg.Connection, sessions, user_id: str, how: str) -> pb.CreateSessionResponse:
    """A session that ended two days ago, revoked or expired."""
    created = await login(sessions, user_id)
    if how == "revoked":
        await sessions.DeleteSession(pb.DeleteSessionRequest(id=created.session.id))
        await db.execute("UPDATE sessions SET revoked_at = now() - interval '2 days' WHERE id = $1",
                         uuid.UUID(created.session.id))
    else:
        await db.execute(
            "UPDATE sessions SET created_at = now() - interval '3 days', expires_at = now() - interval '2 days'"
            " WHERE id = $1",
            uuid.UUID(created.session.id),
        )
    return created


async def session_ids(db: asyncpg.Connection, user_id: str) -> set[str]:
    return {str(row["id"]) for row in await db.fetch("SELECT id FROM sessions WHERE user_id = $1", uuid.UUID(user_id))}


async def test_the_purge_deletes_sessions_ended_over_a_day_ago_and_keeps_the_rest(app, sessions, user_id, db):
    live = await login(sessions, user_id)
    just_revoked = await login(sessions, user_id)
    await sessions.DeleteSession(pb.DeleteSessionRequest(token=just_revoked.token))
    just_expired = await login(sessions, user_id)
    await db.execute("UPDATE sessions SET expires_at = now() - interval '1 hour' WHERE id = $1",
                     uuid.UUID(just_expired.session.id))
    gone = [await ended_long_ago(db, sessions, user_id, how) for how in ("revoked", "expired")]

    assert await app.session_purge.run_once() >= len(gone)
    assert await session_ids(db, user_id) == {live.session.id, just_revoked.session.id, just_expired.session.id}
    assert await check(sessions, live.token) == live.session


async def test_the_purge_runs_batches_until_one_is_short(database_url, redis_url, start_app, sessions, user_id, db):
    small_batches = await start_app(settings_for(
        database_url, REDIS_URL=redis_url, SESSION_PURGE_BATCH_SIZE="2", SESSION_PURGE_INTERVAL_SECONDS="0"))
    for _ in range(5):
        await ended_long_ago(db, sessions, user_id, "expired")
    assert await small_batches.session_purge.run_once() >= 5
    assert await session_ids(db, user_id) == set()


async def test_the_purge_skips_the_round_while_another_replica_holds_its_lock(app, sessions, user_id, db):
    ended = await ended_long_ago(db, sessions, user_id, "revoked")
    other_replica = await asyncpg.connect(app.dsn)
    try:
        async with other_replica.transaction():
            assert await other_replica.fetchval("SELECT pg_try_advisory_xact_lock($1)", PURGE_LOCK_KEY)
            assert await app.session_purge.run_once() is None
            assert await session_ids(db, user_id) == {ended.session.id}
    finally:
        await other_replica.close()
    assert await app.session_purge.run_once() >= 1
    assert await session_ids(db, user_id) == set()


async def test_the_background_purge_runs_every_interval(database_url, redis_url, start_app, sessions, user_id, db):
    await start_app(settings_for(database_url, REDIS_URL=redis_url, SESSION_PURGE_INTERVAL_SECONDS="0.05"))
    await ended_long_ago(db, sessions, user_id, "expired")
    for _ in range(600):  # waits for the task to come round, up to a minute on a loaded machine
        if not await session_ids(db, user_id):
            break
        await asyncio.sleep(0.1)
    assert await session_ids(db, user_id) == set()


async def test_a_purge_without_its_database_is_logged_once_per_outage_and_never_raises(start_app, caplog):
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    app = await start_app(settings_for(unreachable, SESSION_PURGE_INTERVAL_SECONDS="0"))
    caplog.set_level(logging.WARNING, logger="server.rpc")
    for _ in range(3):
        await app.session_purge.run_logged()
    outage_lines = [record for record in caplog.records if record.name == "server.rpc"]
    assert [record.getMessage() for record in outage_lines] == ["database unavailable"]
    assert outage_lines[0].last_failed_operation == "purge of ended sessions"


def test_the_purge_interval_may_be_zero_but_not_negative_and_batches_must_hold_a_row():
    assert Settings.from_env({"SESSION_PURGE_INTERVAL_SECONDS": "0"}).session_purge_interval_seconds == 0
    defaults = Settings.from_env({})
    assert (defaults.session_purge_interval_seconds, defaults.session_purge_batch_size) == (300, 1000)
    for name, value in [("SESSION_PURGE_INTERVAL_SECONDS", "-1"), ("SESSION_PURGE_INTERVAL_SECONDS", "nan"),
                        ("SESSION_PURGE_BATCH_SIZE", "0"), ("SESSION_PURGE_BATCH_SIZE", "many")]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})
