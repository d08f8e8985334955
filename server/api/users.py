"""UserService: accounts, profile updates and password checks."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import grpc
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc as pb_grpc

from server.api import paging
from server.api.validation import Violations
from server.cache.users import Users
from server.domain.common import CreateRequest, PageCursor, request_fingerprint
from server.domain.users import Credentials, User, UserChanges
from server.errors import Conflict, NotFound, RequestIdReused, Unauthenticated, clip
from server.login_limit import LoginLimiter
from server.messages.common import embedded
from server.messages.users import user_message
from server.passwords import Passwords

MAX_PREFERENCES_BYTES = 16 * 1024
UPDATABLE_FIELDS = frozenset({"email", "display_name", "preferences"})
_LIST_USERS = "dataservice.v1.UserService.ListUsers"
_NO_PARAMETERS = b""  # ListUsers has no filter and one order: its tokens bind to the method alone
_BAD_CREDENTIALS = "email or password is incorrect"
_USER_FIELD = pb.GetUserResponse.DESCRIPTOR.fields_by_name["user"].number
assert _USER_FIELD == pb.LookupUserResponse.DESCRIPTOR.fields_by_name["user"].number


class UserServicer(pb_grpc.UserServiceServicer):
    """Serves dataservice.v1.UserService; reads and writes go through ``Users`` (cache + store)."""

    def __init__(
        self, users: Users, passwords: Passwords, page_tokens: paging.PageTokens, login_limiter: LoginLimiter
    ) -> None:
        self._users = users
        self._passwords = passwords
        self._page_tokens = page_tokens
        self._login_limiter = login_limiter

    async def CreateUser(self, request: pb.CreateUserRequest, context: grpc.aio.ServicerContext) -> pb.CreateUserResponse:
        check = Violations()
        email = check.email("user.email", request.user.email)
        display_name = check.text("user.display_name", request.user.display_name, min_length=1, max_length=100)
        preferences = _preferences(check, request.user)
        _password(check, "password", request.password)
        request_id = check.uuid("request_id", request.request_id, required=False)
        check.raise_if_any()
        created = await self._users.create(
            email=email,
            display_name=display_name,
            preferences=preferences,
            password_hash=await self._passwords.hash(request.password),
            request=(
                CreateRequest(request_id, _fingerprint(email, display_name, preferences)) if request_id else None
            ),
        )
        if created.replayed and not await self._passwords.verify(created.password_hash or "", request.password):
            raise RequestIdReused()
        return pb.CreateUserResponse(user=user_message(created.user))

    async def GetUser(self, request: pb.GetUserRequest, context: grpc.aio.ServicerContext) -> bytes:
        """Answers the serialized GetUserResponse (server/interceptors.py sends bytes as they are)."""
        check = Violations()
        user_id = check.uuid("id", request.id)
        check.raise_if_any()
        # The serialized User as the response's field: a cache hit is neither parsed nor serialized again.
        return embedded(_USER_FIELD, [await self._users.get(user_id)])

    async def LookupUser(self, request: pb.LookupUserRequest, context: grpc.aio.ServicerContext) -> bytes:
        """Answers the serialized LookupUserResponse."""
        check = Violations()
        email = check.email("email", request.email)
        check.raise_if_any()
        return embedded(_USER_FIELD, [await self._users.get_by_email(email)])

    async def ListUsers(self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext) -> pb.ListUsersResponse:
        size = paging.page_size(request.page_size)
        after = self._page_tokens.decode(_LIST_USERS, _NO_PARAMETERS, request.page_token)
        # One row more than the page tells whether another page follows, without a count query.
        users = await self._users.list(after=after, limit=size + 1)
        next_token = ""
        if len(users) > size:
            users = users[:size]
            last = users[-1]
            next_token = self._page_tokens.encode(_LIST_USERS, _NO_PARAMETERS, PageCursor(last.created_at, last.id))
        return pb.ListUsersResponse(users=[user_message(user) for user in users], next_page_token=next_token)

    async def UpdateUser(self, request: pb.UpdateUserRequest, context: grpc.aio.ServicerContext) -> pb.UpdateUserResponse:
        check = Violations()
        user_id = check.uuid("user.id", request.user.id)
        paths = set(request.update_mask.paths)
        if not paths:
            check.add("update_mask", f"required; name the fields to change: {', '.join(sorted(UPDATABLE_FIELDS))}")
        for path in sorted(paths - UPDATABLE_FIELDS):
            check.add("update_mask", f"{clip(path)!r} is not an updatable field; use {', '.join(sorted(UPDATABLE_FIELDS))}")
        changes = UserChanges(
            email=check.email("user.email", request.user.email) if "email" in paths else None,
            display_name=(
                check.text("user.display_name", request.user.display_name, min_length=1, max_length=100)
                if "display_name" in paths
                else None
            ),
            preferences=_preferences(check, request.user) if "preferences" in paths else None,
        )
        expected_version = check.conditional_etag("user.etag", request.user.etag, request.etag)
        check.raise_if_any()
        user = await self._users.update(user_id, changes, expected_version=expected_version)
        return pb.UpdateUserResponse(user=user_message(user))

    async def DeleteUser(self, request: pb.DeleteUserRequest, context: grpc.aio.ServicerContext) -> pb.DeleteUserResponse:
        check = Violations()
        user_id = check.uuid("id", request.id)
        expected_version = check.etag("etag", request.etag)
        check.raise_if_any()
        await self._users.delete(user_id, expected_version=expected_version)
        return pb.DeleteUserResponse()

    async def AuthenticateUser(
        self, request: pb.AuthenticateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateUserResponse:
        check = Violations()
        email = check.email("email", request.email)
        if not request.password:
            check.add("password", "required")
        address = check.ip_address("client_ip", request.client_ip)
        check.raise_if_any()
        client_ip = _limit_key(address) if address is not None else None
        await self._login_limiter.check(email, client_ip)
        credentials = await self._users.credentials_by_email(email)
        if credentials is None:
            await self._passwords.verify_absent(request.password)
            await self._login_limiter.failed(email, client_ip)
            raise Unauthenticated(_BAD_CREDENTIALS)
        if not await self._passwords.verify(credentials.password_hash, request.password):
            await self._login_limiter.failed(email, client_ip)
            raise Unauthenticated(_BAD_CREDENTIALS)
        await self._login_limiter.succeeded(email)
        user = credentials.user
        if self._passwords.is_weaker(credentials.password_hash):
            user = await self._upgrade_hash(credentials, request.password)
        return pb.AuthenticateUserResponse(user=user_message(user))

    async def _upgrade_hash(self, credentials: Credentials, password: str) -> User:
        """Replaces a hash made with weaker (older) parameters while the password is at hand, so that raising
        PASSWORD_HASH_* takes effect for every account as it logs in. Like a password change, it moves the
        etag; a concurrent change or delete wins, and the login still succeeds."""
        new_hash = await self._passwords.hash(password)
        try:
            return await self._users.set_password_hash(
                credentials.user.id, new_hash=new_hash, old_hash=credentials.password_hash
            )
        except (Conflict, NotFound):
            return credentials.user

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangePasswordResponse:
        check = Violations()
        user_id = check.uuid("id", request.id)
        if not request.old_password:
            check.add("old_password", "required")
        _password(check, "new_password", request.new_password)
        check.raise_if_any()
        credentials = await self._users.credentials(user_id)
        if not await self._passwords.verify(credentials.password_hash, request.old_password):
            raise Unauthenticated("the current password is incorrect")
        new_hash = await self._passwords.hash(request.new_password)
        await self._users.set_password_hash(user_id, new_hash=new_hash, old_hash=credentials.password_hash)
        return pb.ChangePasswordResponse()


def _fingerprint(email: str, display_name: str, preferences: dict[str, Any]) -> bytes:
    """What a CreateUser request asks for, as a digest that a retry reproduces exactly. The password is left
    out (an unsalted digest of it must never be stored); a replay checks it against the stored hash instead."""
    return request_fingerprint(email, display_name, preferences)


def _password(check: Violations, field: str, value: str) -> None:
    if len(value) < 8:
        check.add(field, "must be at least 8 characters")
    elif len(value) > 256:
        check.add(field, "must be at most 256 characters")


def _preferences(check: Violations, user: pb.User) -> dict[str, Any]:
    """The user's preferences as a dict, {} when unset; bad ones are recorded in ``check``."""
    value = user.preferences if user.HasField("preferences") else None
    return check.json_object("user.preferences", value, max_bytes=MAX_PREFERENCES_BYTES) or {}


def _limit_key(address: IPv4Address | IPv6Address) -> str:
    """One spelling per client for the login limit: an IPv4 address mapped into IPv6 counts as the IPv4 one."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
