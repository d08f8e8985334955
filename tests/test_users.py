"""UserService over the wire: every RPC, its happy path and each error status."""

from __future__ import annotations

import asyncio
import base64
import uuid

import asyncpg
import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from google.protobuf import field_mask_pb2, struct_pb2

from tests.grpc_errors import bad_request_fields, fails, status_of
from tests.harness import settings_for, unique_email

PASSWORD = "correct horse battery"


async def create(users, email: str | None = None, **fields) -> pb.User:
    preferences = struct_pb2.Struct()
    preferences.update(fields.pop("preferences", {}))
    request = pb.CreateUserRequest(
        user=pb.User(email=email or unique_email(), display_name=fields.pop("display_name", "Ada"), preferences=preferences),
        password=fields.pop("password", PASSWORD),
        **fields,
    )
    return (await users.CreateUser(request)).user


# --- CreateUser -----------------------------------------------------------------------------------------------


async def test_create_user_returns_the_stored_user_with_server_fields(users):
    email = unique_email()
    user = await create(users, email, display_name="Ada Lovelace", preferences={"theme": "dark", "size": 3})
    assert uuid.UUID(user.id)
    assert (user.email, user.display_name) == (email, "Ada Lovelace")
    assert dict(user.preferences) == {"theme": "dark", "size": 3}
    assert user.etag and user.create_time.seconds > 0 and user.update_time == user.create_time
    fetched = (await users.GetUser(pb.GetUserRequest(id=user.id))).user
    assert fetched == user


async def test_create_user_never_returns_the_password_or_its_hash(users):
    user = await create(users)
    assert PASSWORD not in str(user) and "argon2" not in str(user)


async def test_create_user_with_a_taken_email_in_any_case_is_already_exists(users):
    email = unique_email()
    await create(users, email)
    error = await fails(create(users, email.upper()))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_create_user_retried_with_the_same_request_id_returns_the_first_user(users):
    request_id = str(uuid.uuid4())
    email = unique_email()
    first = await create(users, email, request_id=request_id)
    again = await create(users, email, request_id=request_id)
    assert again == first


async def test_concurrent_retries_of_one_create_make_one_user(users, database_url):
    request_id = str(uuid.uuid4())
    email = unique_email()
    results = await asyncio.gather(*(create(users, email, request_id=request_id) for _ in range(8)))
    assert len({user.id for user in results}) == 1
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE lower(email) = lower($1)", email) == 1
    finally:
        await conn.close()


async def test_a_request_id_reused_by_a_different_request_is_invalid_argument(users):
    request_id = str(uuid.uuid4())
    email = unique_email()
    first = await create(users, email, request_id=request_id)
    different = [
        dict(email=unique_email()),
        dict(email=email, display_name="Someone else"),
        dict(email=email, preferences={"theme": "dark"}),
        dict(email=email, password="another good password"),
    ]
    for fields in different:
        error = await fails(create(users, fields.pop("email"), request_id=request_id, **fields))
        assert bad_request_fields(error) == {"request_id"}, fields
    assert await create(users, email, request_id=request_id.upper()) == first, "the same id in upper case is a retry"


@pytest.mark.parametrize(
    "spelling",
    [
        lambda u: u.hex,
        lambda u: u.hex.upper(),
        lambda u: f"urn:uuid:{u}",
        lambda u: f"{{{u}}}",
        lambda u: f"0x{u.hex}",
        lambda u: f" {u} ",
        lambda u: f"{u}\n",
        lambda u: "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in str(u)),  # Arabic-Indic digits
    ],
    ids=["no hyphens", "upper no hyphens", "urn", "braces", "0x", "spaces", "newline", "non-ASCII digits"],
)
async def test_only_the_canonical_uuid_form_is_accepted_for_every_id(users, spelling):
    user = await create(users)
    text = spelling(uuid.UUID(user.id))
    assert bad_request_fields(await fails(users.GetUser(pb.GetUserRequest(id=text)))) == {"id"}
    assert bad_request_fields(await fails(users.DeleteUser(pb.DeleteUserRequest(id=text)))) == {"id"}
    error = await fails(create(users, request_id=spelling(uuid.uuid4())))
    assert bad_request_fields(error) == {"request_id"}


@pytest.mark.parametrize(
    ("user", "password", "request_id", "fields"),
    [
        (pb.User(display_name="A"), PASSWORD, "", {"user.email"}),
        (pb.User(email="not-an-email", display_name="A"), PASSWORD, "", {"user.email"}),
        (pb.User(email="a b@example.com", display_name="A"), PASSWORD, "", {"user.email"}),
        (pb.User(email="x" * 250 + "@e.co", display_name="A"), PASSWORD, "", {"user.email"}),
        (pb.User(email="ok@example.com"), PASSWORD, "", {"user.display_name"}),
        (pb.User(email="ok@example.com", display_name="x" * 101), PASSWORD, "", {"user.display_name"}),
        (pb.User(email="ok@example.com", display_name="nul\x00byte"), PASSWORD, "", {"user.display_name"}),
        (pb.User(email="ok@example.com", display_name="A"), "short", "", {"password"}),
        (pb.User(email="ok@example.com", display_name="A"), "p" * 257, "", {"password"}),
        (pb.User(email="ok@example.com", display_name="A"), PASSWORD, "not-a-uuid", {"request_id"}),
        (pb.User(), "", "bad", {"user.email", "user.display_name", "password", "request_id"}),
    ],
)
async def test_create_user_rejects_each_bad_field_by_name(users, user, password, request_id, fields):
    error = await fails(users.CreateUser(pb.CreateUserRequest(user=user, password=password, request_id=request_id)))
    assert bad_request_fields(error) == fields


async def test_create_user_rejects_preferences_too_large_or_with_nul(users):
    for preferences in ({"blob": "x" * 20_000}, {"key": "nul\x00"}):
        error = await fails(create(users, preferences=preferences))
        assert bad_request_fields(error) == {"user.preferences"}


# --- GetUser / LookupUser -------------------------------------------------------------------------------------


async def test_get_user_of_an_unknown_id_is_not_found(users):
    error = await fails(users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4()))))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert status_of(error).details, "NOT_FOUND carries a ResourceInfo detail"


async def test_get_user_with_a_malformed_id_is_invalid_argument(users):
    for bad in ("", "123", "'; DROP TABLE users; --"):
        error = await fails(users.GetUser(pb.GetUserRequest(id=bad)))
        assert bad_request_fields(error) == {"id"}


async def test_lookup_user_finds_the_email_in_any_case(users):
    email = unique_email("Mixed")
    user = await create(users, email)
    found = (await users.LookupUser(pb.LookupUserRequest(email=email.swapcase()))).user
    assert found.id == user.id


async def test_lookup_user_errors(users):
    missing = await fails(users.LookupUser(pb.LookupUserRequest(email=unique_email())))
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    malformed = await fails(users.LookupUser(pb.LookupUserRequest(email="nobody")))
    assert bad_request_fields(malformed) == {"email"}


# --- ListUsers ------------------------------------------------------------------------------------------------


async def list_all(users, page_size: int, between_pages=None) -> list[pb.User]:
    seen: list[pb.User] = []
    token = ""
    while True:
        page = await users.ListUsers(pb.ListUsersRequest(page_size=page_size, page_token=token))
        assert len(page.users) <= page_size
        seen.extend(page.users)
        token = page.next_page_token
        if not token:
            return seen
        if between_pages is not None:
            await between_pages()


async def test_list_users_pages_are_stable_under_concurrent_inserts_and_deletes(users):
    mine = {(await create(users)).id for _ in range(7)}
    doomed = await create(users)
    inserted: set[str] = set()

    async def write_between_pages() -> None:
        inserted.add((await create(users)).id)
        if doomed.id not in inserted:
            await users.DeleteUser(pb.DeleteUserRequest(id=doomed.id))
            inserted.add(doomed.id)

    seen = [user.id for user in await list_all(users, page_size=3, between_pages=write_between_pages)]
    assert len(seen) == len(set(seen)), "no user appears on two pages"
    assert mine <= set(seen), "every user that existed before the listing is listed"
    created = [user.create_time.ToDatetime() for user in await list_all(users, page_size=1000)]
    assert created == sorted(created), "oldest first"


async def test_list_users_rejects_bad_paging_arguments(users):
    negative = await fails(users.ListUsers(pb.ListUsersRequest(page_size=-1)))
    assert bad_request_fields(negative) == {"page_size"}
    for token in ("garbage", "eyJ2IjoxfQ", "eyJ2IjoxLCJrIjoiY29udGVudCIsInQiOiIyMDI2IiwiaSI6IngifQ"):
        error = await fails(users.ListUsers(pb.ListUsersRequest(page_token=token)))
        assert bad_request_fields(error) == {"page_token"}


async def test_list_users_caps_an_oversized_page_size(users):
    page = await users.ListUsers(pb.ListUsersRequest(page_size=1_000_000))
    assert len(page.users) <= 1000


# --- UpdateUser -----------------------------------------------------------------------------------------------


def update_request(user: pb.User, paths: list[str], etag: str = "") -> pb.UpdateUserRequest:
    return pb.UpdateUserRequest(user=user, update_mask=field_mask_pb2.FieldMask(paths=paths), etag=etag)


async def test_update_user_changes_only_the_masked_fields(users):
    user = await create(users, display_name="Before", preferences={"a": 1})
    change = pb.User(id=user.id, email="ignored@example.com", display_name="After")
    updated = (await users.UpdateUser(update_request(change, ["display_name"], etag=user.etag))).user
    assert updated.display_name == "After"
    assert updated.email == user.email and dict(updated.preferences) == {"a": 1}
    assert updated.etag != user.etag
    assert updated.update_time.ToDatetime() >= user.update_time.ToDatetime()
    assert (await users.GetUser(pb.GetUserRequest(id=user.id))).user == updated


async def test_update_user_can_clear_preferences_and_change_email(users):
    user = await create(users, preferences={"a": 1})
    new_email = unique_email("renamed")
    change = pb.User(id=user.id, email=new_email)
    updated = (await users.UpdateUser(update_request(change, ["email", "preferences"]))).user
    assert updated.email == new_email and dict(updated.preferences) == {}


async def test_update_user_with_a_stale_etag_is_aborted(users):
    user = await create(users)
    await users.UpdateUser(update_request(pb.User(id=user.id, display_name="First"), ["display_name"], user.etag))
    error = await fails(users.UpdateUser(update_request(pb.User(id=user.id, display_name="Second"), ["display_name"], user.etag)))
    assert error.code() is grpc.StatusCode.ABORTED
    assert (await users.GetUser(pb.GetUserRequest(id=user.id))).user.display_name == "First"


async def test_update_user_honours_the_etag_on_the_user_itself(users):
    user = await create(users)
    fresh = (await users.UpdateUser(update_request(pb.User(id=user.id, display_name="First", etag=user.etag),
                                                   ["display_name"]))).user
    stale = await fails(users.UpdateUser(update_request(pb.User(id=user.id, display_name="Second", etag=user.etag),
                                                        ["display_name"])))
    assert stale.code() is grpc.StatusCode.ABORTED
    assert (await users.GetUser(pb.GetUserRequest(id=user.id))).user == fresh


async def test_update_user_with_two_different_etags_is_invalid_argument(users):
    user = await create(users)
    request = update_request(pb.User(id=user.id, display_name="x", etag=user.etag), ["display_name"], etag="1" + user.etag)
    assert bad_request_fields(await fails(users.UpdateUser(request))) == {"etag"}


async def test_two_concurrent_updaters_with_one_etag_never_both_win(users):
    user = await create(users)
    attempts = [
        users.UpdateUser(update_request(pb.User(id=user.id, display_name=f"writer {n}"), ["display_name"], user.etag))
        for n in range(6)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    winners = [result for result in results if isinstance(result, pb.UpdateUserResponse)]
    losers = [result for result in results if isinstance(result, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert all(error.code() is grpc.StatusCode.ABORTED for error in losers) and len(losers) == 5
    assert (await users.GetUser(pb.GetUserRequest(id=user.id))).user.display_name == winners[0].user.display_name


async def test_update_user_errors(users):
    user = await create(users)
    taken = await create(users)
    cases = [
        (update_request(pb.User(id=user.id, display_name="x"), []), {"update_mask"}),
        (update_request(pb.User(id=user.id, display_name="x"), ["display_name", "password_hash"]), {"update_mask"}),
        (update_request(pb.User(id=user.id), ["display_name"]), {"user.display_name"}),
        (update_request(pb.User(id=user.id, email="bad"), ["email"]), {"user.email"}),
        (update_request(pb.User(id="nope", display_name="x"), ["display_name"]), {"user.id"}),
        (update_request(pb.User(id=user.id, display_name="x"), ["display_name"], etag="W/abc"), {"etag"}),
    ]
    for request, fields in cases:
        assert bad_request_fields(await fails(users.UpdateUser(request))) == fields
    missing = await fails(users.UpdateUser(update_request(pb.User(id=str(uuid.uuid4()), display_name="x"), ["display_name"])))
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    duplicate = await fails(users.UpdateUser(update_request(pb.User(id=user.id, email=taken.email.upper()), ["email"])))
    assert duplicate.code() is grpc.StatusCode.ALREADY_EXISTS


# --- DeleteUser -----------------------------------------------------------------------------------------------


async def test_delete_user_removes_it(users):
    user = await create(users)
    await users.DeleteUser(pb.DeleteUserRequest(id=user.id, etag=user.etag))
    error = await fails(users.GetUser(pb.GetUserRequest(id=user.id)))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    again = await fails(users.DeleteUser(pb.DeleteUserRequest(id=user.id)))
    assert again.code() is grpc.StatusCode.NOT_FOUND


async def test_delete_user_with_a_stale_etag_is_aborted_and_keeps_the_user(users):
    user = await create(users)
    await users.UpdateUser(update_request(pb.User(id=user.id, display_name="Moved on"), ["display_name"]))
    error = await fails(users.DeleteUser(pb.DeleteUserRequest(id=user.id, etag=user.etag)))
    assert error.code() is grpc.StatusCode.ABORTED
    assert (await users.GetUser(pb.GetUserRequest(id=user.id))).user.id == user.id


async def test_delete_user_with_a_malformed_id_is_invalid_argument(users):
    assert bad_request_fields(await fails(users.DeleteUser(pb.DeleteUserRequest(id="x")))) == {"id"}


# --- AuthenticateUser / ChangePassword ------------------------------------------------------------------------


async def test_authenticate_user_accepts_the_right_password_in_any_email_case(users):
    user = await create(users)
    result = await users.AuthenticateUser(pb.AuthenticateUserRequest(email=user.email.upper(), password=PASSWORD))
    assert result.user.id == user.id


async def test_authenticate_user_answers_a_wrong_password_and_an_unknown_email_alike(users):
    user = await create(users)
    wrong = await fails(users.AuthenticateUser(pb.AuthenticateUserRequest(email=user.email, password="wrong password")))
    unknown = await fails(users.AuthenticateUser(pb.AuthenticateUserRequest(email=unique_email(), password=PASSWORD)))
    assert wrong.code() is unknown.code() is grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details() == unknown.details()


async def test_authenticate_user_validates_its_input(users):
    error = await fails(users.AuthenticateUser(pb.AuthenticateUserRequest(email="bad", password="")))
    assert bad_request_fields(error) == {"email", "password"}


async def test_change_password_needs_the_old_password_and_replaces_it(users):
    user = await create(users)
    wrong = await fails(
        users.ChangePassword(pb.ChangePasswordRequest(id=user.id, old_password="not it", new_password="brand new pass"))
    )
    assert wrong.code() is grpc.StatusCode.UNAUTHENTICATED
    await users.ChangePassword(pb.ChangePasswordRequest(id=user.id, old_password=PASSWORD, new_password="brand new pass"))
    ok = await users.AuthenticateUser(pb.AuthenticateUserRequest(email=user.email, password="brand new pass"))
    assert ok.user.id == user.id
    old = await fails(users.AuthenticateUser(pb.AuthenticateUserRequest(email=user.email, password=PASSWORD)))
    assert old.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_change_password_errors(users):
    user = await create(users)
    short = await fails(users.ChangePassword(pb.ChangePasswordRequest(id=user.id, old_password=PASSWORD, new_password="short")))
    assert bad_request_fields(short) == {"new_password"}
    empty = await fails(users.ChangePassword(pb.ChangePasswordRequest(id="x", new_password="long enough")))
    assert bad_request_fields(empty) == {"id", "old_password"}
    missing = await fails(
        users.ChangePassword(pb.ChangePasswordRequest(id=str(uuid.uuid4()), old_password=PASSWORD, new_password="long enough"))
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND


async def test_password_is_stored_as_an_argon2id_hash(users, database_url):
    user = await create(users)
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", uuid.UUID(user.id))
    finally:
        await conn.close()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


# --- Inputs that once reached the database unchecked ----------------------------------------------------------


async def test_emails_equal_under_the_services_case_rule_are_one_account_beyond_ascii(users):
    tag = uuid.uuid4().hex[:8]
    first = await create(users, f"ΟΔΥΣ-{tag}@example.com")  # capital sigma before '-' lowers to final sigma
    error = await fails(create(users, f"οδυς-{tag}@example.com"))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    for email in (f"οδυς-{tag}@example.com", f"ΟΔΥΣ-{tag}@example.com"):
        assert (await users.LookupUser(pb.LookupUserRequest(email=email))).user.id == first.id
    other = await create(users, f"οδυσ-{tag}@example.com")  # a medial sigma is another letter
    assert (await users.LookupUser(pb.LookupUserRequest(email=other.email))).user.id == other.id


async def test_an_etag_beyond_the_version_range_is_invalid_not_internal(users):
    user = await create(users)
    for call in (
        users.UpdateUser(update_request(pb.User(id=user.id, display_name="x"), ["display_name"], etag="9" * 19)),
        users.DeleteUser(pb.DeleteUserRequest(id=user.id, etag="9999999999999999999")),
    ):
        assert bad_request_fields(await fails(call)) == {"etag"}


async def test_preferences_with_nan_are_invalid_but_a_literal_backslash_u0000_is_kept(users):
    preferences = struct_pb2.Struct()
    preferences.update({"ratio": float("nan")})
    error = await fails(users.CreateUser(pb.CreateUserRequest(
        user=pb.User(email=unique_email(), display_name="N", preferences=preferences), password=PASSWORD)))
    assert bad_request_fields(error) == {"user.preferences"}
    user = await create(users, preferences={"path": "C:\\u0000dir"})
    assert dict(user.preferences) == {"path": "C:\\u0000dir"}


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v":1,"k":"users","t":"2026-01-01T00:00:00+00:00","i":123}',
        b'{"v":1,"k":"users","t":"0001-01-01T00:00:00+14:00","i":"8f1c6f8e-5f5e-4d8a-9a57-2f1b5c8f1f00"}',
        b'[' * 200 + b']' * 200,
        b'"just a string"',
    ],
)
async def test_forged_page_tokens_are_invalid_not_internal(users, payload):
    token = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    assert bad_request_fields(await fails(users.ListUsers(pb.ListUsersRequest(page_token=token)))) == {"page_token"}


async def logins_on_another_replica(database_url: str, start_app, *, created_at_cost: str, login_at_cost: str):
    """Creates a user on a replica hashing at ``created_at_cost`` and logs in twice on one hashing at
    ``login_at_cost``; returns the created user, both logins' users, the user read after, and the stored hash."""
    creator = await start_app(settings_for(database_url, PASSWORD_HASH_TIME_COST=created_at_cost))
    other = await start_app(settings_for(database_url, PASSWORD_HASH_TIME_COST=login_at_cost))
    email = unique_email("rehash")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{creator.port}") as creator_channel, \
            grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as other_channel:
        created = await create(user_service_pb2_grpc.UserServiceStub(creator_channel), email)
        replica = user_service_pb2_grpc.UserServiceStub(other_channel)
        login = pb.AuthenticateUserRequest(email=email, password=PASSWORD)
        logins = [(await replica.AuthenticateUser(login)).user for _ in range(2)]
        read_after = (await replica.GetUser(pb.GetUserRequest(id=created.id))).user
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", uuid.UUID(created.id))
    finally:
        await conn.close()
    return created, logins, read_after, stored


async def test_a_login_upgrades_a_hash_made_with_weaker_parameters(database_url, start_app):
    created, (first, second), read_after, stored = await logins_on_another_replica(
        database_url, start_app, created_at_cost="1", login_at_cost="2")
    assert first.id == created.id and first.etag != created.etag
    assert second == first == read_after, "the etag a login returns is current; an up-to-date hash is left alone"
    assert ",t=2," in stored


async def test_a_login_leaves_a_hash_stronger_than_configured_alone(database_url, start_app):
    """During a rollout replicas may differ in PASSWORD_HASH_*: the weaker one must not rewrite hashes back."""
    created, logins, read_after, stored = await logins_on_another_replica(
        database_url, start_app, created_at_cost="2", login_at_cost="1")
    assert {user.etag for user in [*logins, read_after]} == {created.etag}
    assert ",t=2," in stored
