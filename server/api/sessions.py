"""SessionService: login sessions, the bearer tokens that name them, and their revocation."""

from __future__ import annotations

from datetime import timedelta

import grpc
from dataservice.v1 import session_service_pb2 as pb
from dataservice.v1 import session_service_pb2_grpc as pb_grpc

from server.api import paging
from server.api.validation import Violations
from server.cache.sessions import Sessions
from server.domain.common import CreateRequest, PageCursor, request_fingerprint
from server.domain.sessions import DEFAULT_TTL, MAX_LIFETIME, MIN_TTL, NewSession
from server.errors import Unauthenticated
from server.messages.common import embedded
from server.messages.sessions import session_message

MAX_USER_AGENT_CHARS = 512
_LIST_SESSIONS = "dataservice.v1.SessionService.ListSessions"
# One answer for every token that does not name a live session, so that an answer tells a caller nothing
# about a token it does not hold (whether it ever existed, was revoked or has expired).
_INVALID_TOKEN = "the session token is not valid (unknown, revoked or expired); log in again"
_MAX_NANOS = 999_999_999
_SESSION_FIELD = pb.GetSessionResponse.DESCRIPTOR.fields_by_name["session"].number
_MIN_TTL_SECONDS = int(MIN_TTL.total_seconds())
_MAX_TTL_SECONDS = int(MAX_LIFETIME.total_seconds())


class SessionServicer(pb_grpc.SessionServiceServicer):
    """Serves dataservice.v1.SessionService; token checks and writes go through ``Sessions`` (cache + store)."""

    def __init__(self, sessions: Sessions, page_tokens: paging.PageTokens) -> None:
        self._sessions = sessions
        self._page_tokens = page_tokens

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSessionResponse:
        check = Violations()
        new = NewSession(
            user_id=check.uuid("session.user_id", request.session.user_id),
            ttl=_ttl(check, "ttl", request),
            user_agent=check.text(
                "session.user_agent", request.session.user_agent, min_length=0, max_length=MAX_USER_AGENT_CHARS
            ),
            ip_address=check.ip_address("session.ip_address", request.session.ip_address),
        )
        request_id = check.uuid("request_id", request.request_id, required=False)
        check.raise_if_any()
        issued = await self._sessions.create(new, CreateRequest(request_id, _fingerprint(new)) if request_id else None)
        return pb.CreateSessionResponse(session=session_message(issued.session), token=issued.token)

    async def GetSession(self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext) -> bytes:
        """Answers the serialized GetSessionResponse (server/interceptors.py sends bytes as they are)."""
        session = await self._sessions.authenticate(request.token)
        if session is None:
            raise Unauthenticated(_INVALID_TOKEN)
        return embedded(_SESSION_FIELD, [session])

    async def RefreshSession(
        self, request: pb.RefreshSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshSessionResponse:
        session = await self._sessions.refresh(request.token)
        if session is None:
            raise Unauthenticated(_INVALID_TOKEN)
        return pb.RefreshSessionResponse(session=session_message(session))

    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSessionResponse:
        check = Violations()
        named_by = request.WhichOneof("session")
        if named_by is None:
            check.add("session", "required: set either token or id")
        session_id = check.uuid("id", request.id) if named_by == "id" else None
        user_id = check.uuid("user_id", request.user_id, required=False)
        check.raise_if_any()
        if named_by == "token":
            await self._sessions.revoke_by_token(request.token, user_id=user_id)
        else:
            await self._sessions.revoke_by_id(session_id, user_id=user_id)
        return pb.DeleteSessionResponse()

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        check = Violations()
        user_id = check.uuid("user_id", request.user_id)
        check.raise_if_any()
        size = paging.page_size(request.page_size)
        # Tokens bind to the user listed: a token of one user's listing is refused for another's.
        after = self._page_tokens.decode(_LIST_SESSIONS, user_id.bytes, request.page_token)
        # One row more than the page tells whether another page follows, without a count query.
        sessions = await self._sessions.list(user_id, after=after, limit=size + 1)
        next_token = ""
        if len(sessions) > size:
            sessions = sessions[:size]
            last = sessions[-1]
            next_token = self._page_tokens.encode(_LIST_SESSIONS, user_id.bytes, PageCursor(last.created_at, last.id))
        return pb.ListSessionsResponse(sessions=[session_message(s) for s in sessions], next_page_token=next_token)

    async def DeleteUserSessions(
        self, request: pb.DeleteUserSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteUserSessionsResponse:
        check = Violations()
        user_id = check.uuid("user_id", request.user_id)
        except_session_id = check.uuid("except_session_id", request.except_session_id, required=False)
        check.raise_if_any()
        count = await self._sessions.revoke_all_of_user(user_id, except_session_id=except_session_id)
        return pb.DeleteUserSessionsResponse(deleted_count=count)


def _ttl(check: Violations, field: str, request: pb.CreateSessionRequest) -> timedelta:
    """The requested ttl, or the default when unset. Checked on the Duration's own integers, exactly, before it
    becomes a timedelta (which the largest Durations would overflow); nanoseconds below a microsecond are
    dropped, as PostgreSQL keeps microseconds."""
    if not request.HasField("ttl"):
        return DEFAULT_TTL
    seconds, nanos = request.ttl.seconds, request.ttl.nanos
    if not -_MAX_NANOS <= nanos <= _MAX_NANOS or (seconds > 0 > nanos) or (seconds < 0 < nanos):
        check.add(field, f"is not a valid Duration: nanos must be within ±{_MAX_NANOS} and of the sign of seconds")
    elif not (_MIN_TTL_SECONDS, 0) <= (seconds, nanos) <= (_MAX_TTL_SECONDS, 0):
        check.add(field, "must be between 1 minute and 30 days")
    else:
        return timedelta(seconds=seconds, microseconds=nanos // 1000)
    return DEFAULT_TTL


def _fingerprint(new: NewSession) -> bytes:
    """What a CreateSession request asks for, as a digest that a retry reproduces exactly: the ttl as stored
    (whole microseconds) and the address in its canonical text, so that spellings of one request agree."""
    ip_text = str(new.ip_address) if new.ip_address is not None else ""
    return request_fingerprint(str(new.user_id), new.ttl // timedelta(microseconds=1), new.user_agent, ip_text)
