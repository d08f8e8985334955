"""The table of measured paths: what to call, with which requests, on which seeded data.

Adding a path is one ``BenchPath`` row (and a seed, if it reads new data). Every path
is compared with ``echo``, the first row, and with ``reference`` (a minimal GetUser on
the same stack, bench/reference_server.py), in the same run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import grpc
from dataservice.v1 import content_service_pb2 as content_pb
from dataservice.v1 import session_service_pb2 as session_pb
from dataservice.v1 import user_service_pb2 as pb

from bench import echo_server
from bench.metrics import split_method
from bench.modes import UNCACHED_MODE, CacheMode
from bench.seed import SeededUser, seed_sessions, seed_users
from bench.seed_contents import SEED_TAG, SeededContents, seed_contents

D = TypeVar("D")
T = TypeVar("T")
USER_SERVICE = "/dataservice.v1.UserService"
SESSION_SERVICE = "/dataservice.v1.SessionService"
CONTENT_SERVICE = "/dataservice.v1.ContentService"
BASELINE = "echo"
REFERENCE = "reference"
BATCH_SIZE = 100
PAGE_SIZE = 50


@dataclass(frozen=True)
class Seed(Generic[D]):
    """Data the runner creates once, before any load, and hands to every path naming it."""

    name: str
    load: Callable[[SeedContext], Awaitable[D]]


@dataclass
class SeedContext:
    """What a seed may use: a channel to the service, its database, the sizes asked for,
    and the other seeds (each loaded once per run, however many seeds and paths need it)."""

    channel: grpc.aio.Channel
    database_url: str
    users: int
    sessions: int
    contents: int
    loaded: dict[str, Any] = field(default_factory=dict)

    async def need(self, seed: Seed[D]) -> D:
        if seed.name not in self.loaded:
            self.loaded[seed.name] = await seed.load(self)
        data: D = self.loaded[seed.name]
        return data


@dataclass(frozen=True)
class BenchPath(Generic[D]):
    """One measured gRPC method.

    build(data, count) returns ``count`` serialized requests spread over the seeded
    data; each becomes one h2load process's frame (h2load cannot vary the body).
    A ``cached`` path reads through the service's cache, so it is measured once per cache
    mode (``with_cache_modes``); ``mode`` is the mode of this row.
    """

    name: str
    method: str  # "/package.Service/Method", as on the wire and in the metrics' labels
    seed: Seed[D]
    build: Callable[[D, int], list[bytes]]
    server: str = "service"  # "echo", "reference", or a cache mode's service process (CacheMode.server)
    items: int = 1  # items each call returns (a batch read's size): items/s is RPC/s times this
    cached: bool = False
    mode: CacheMode = UNCACHED_MODE
    uncached_row: str | None = None  # for a row in a cache mode: the same path's uncached row, its comparison


def spread(items: Sequence[T], count: int) -> list[T]:
    """count items evenly spaced over the sequence (repeating when it is shorter)."""
    if not items:
        raise ValueError("nothing was seeded to build requests from")
    return [
        items[index * len(items) // count] if count <= len(items) else items[index % len(items)]
        for index in range(count)
    ]


async def _load_users(context: SeedContext) -> list[SeededUser]:
    return await seed_users(context.channel, context.users)


async def _load_sessions(context: SeedContext) -> list[str]:
    return await seed_sessions(context.channel, await context.need(USERS), context.sessions)


async def _load_contents(context: SeedContext) -> SeededContents:
    return await seed_contents(context.database_url, await context.need(USERS), context.contents)


USERS: Seed[list[SeededUser]] = Seed("users", _load_users)
SESSIONS: Seed[list[str]] = Seed("sessions", _load_sessions)
CONTENTS: Seed[SeededContents] = Seed("contents", _load_contents)


def get_user_requests(users: list[SeededUser], count: int) -> list[bytes]:
    return [pb.GetUserRequest(id=user.id).SerializeToString() for user in spread(users, count)]


def lookup_user_requests(users: list[SeededUser], count: int) -> list[bytes]:
    return [pb.LookupUserRequest(email=user.email).SerializeToString() for user in spread(users, count)]


def get_session_requests(tokens: list[str], count: int) -> list[bytes]:
    return [session_pb.GetSessionRequest(token=token).SerializeToString() for token in spread(tokens, count)]


def get_content_requests(contents: SeededContents, count: int) -> list[bytes]:
    return [content_pb.GetContentRequest(id=id_).SerializeToString() for id_ in spread(contents.ids, count)]


def batch_get_content_requests(contents: SeededContents, count: int) -> list[bytes]:
    """Each request names BATCH_SIZE different ids, each batch starting elsewhere in the seeded rows."""
    ids = contents.ids
    starts = spread(range(len(ids)), count)
    return [
        content_pb.BatchGetContentsRequest(ids=[ids[(start + offset) % len(ids)] for offset in range(BATCH_SIZE)])
        .SerializeToString()
        for start in starts
    ]


_ORDERS = [
    content_pb.CONTENT_ORDER_CREATE_TIME_DESC,
    content_pb.CONTENT_ORDER_UPDATE_TIME_DESC,
    content_pb.CONTENT_ORDER_CREATE_TIME_ASC,
    content_pb.CONTENT_ORDER_UPDATE_TIME_ASC,
]


def list_contents_requests(contents: SeededContents, count: int) -> list[bytes]:
    """First pages of the seeded rows, in each order in turn."""
    where = content_pb.ContentFilter(tags=[SEED_TAG])
    return [
        content_pb.ListContentsRequest(filter=where, order=order, page_size=PAGE_SIZE).SerializeToString()
        for order in spread(_ORDERS, count)
    ]


def search_contents_requests(contents: SeededContents, count: int) -> list[bytes]:
    """First pages of two-word searches over the seeded rows (about 2 % of them match each)."""
    where = content_pb.ContentFilter(tags=[SEED_TAG])
    return [
        content_pb.SearchContentsRequest(query=query, filter=where, page_size=PAGE_SIZE).SerializeToString()
        for query in spread(contents.queries, count)
    ]


PATHS: tuple[BenchPath[Any], ...] = (
    # The echo returns the GetUser request bytes: the same request size, nothing else.
    BenchPath(BASELINE, echo_server.PATH, USERS, get_user_requests, server="echo"),
    BenchPath(REFERENCE, f"{USER_SERVICE}/GetUser", USERS, get_user_requests, server="reference"),
    BenchPath("GetUser", f"{USER_SERVICE}/GetUser", USERS, get_user_requests, cached=True),
    BenchPath("LookupUser", f"{USER_SERVICE}/LookupUser", USERS, lookup_user_requests, cached=True),
    BenchPath("GetSession", f"{SESSION_SERVICE}/GetSession", SESSIONS, get_session_requests, cached=True),
    BenchPath("GetContent", f"{CONTENT_SERVICE}/GetContent", CONTENTS, get_content_requests, cached=True),
    BenchPath(
        "BatchGetContents",
        f"{CONTENT_SERVICE}/BatchGetContents",
        CONTENTS,
        batch_get_content_requests,
        items=BATCH_SIZE,
        cached=True,
    ),
    BenchPath("ListContents", f"{CONTENT_SERVICE}/ListContents", CONTENTS, list_contents_requests),
    BenchPath("SearchContents", f"{CONTENT_SERVICE}/SearchContents", CONTENTS, search_contents_requests),
)


def select_paths(
    only: Sequence[str] | None,
    overrides: dict[str, str],
    modes: Sequence[CacheMode] = (UNCACHED_MODE,),
    table: Sequence[BenchPath[Any]] = PATHS,
) -> list[BenchPath[Any]]:
    """The rows of this run, the echo and the reference first, each cached path once per mode.

    overrides maps a name to a method path: an existing name keeps its requests and
    seed and calls that method instead; a new name is added, uncached, and sends GetUser's
    requests (enough to point the runner at a method that fails or does not exist).
    only, when given, keeps the echo, the reference and the named paths (names without a mode).
    """
    by_name = {path.name: path for path in table}
    for name, method in overrides.items():
        split_method(method)  # fail early on a malformed method path
        if name in (BASELINE, REFERENCE):
            raise ValueError(f"--path cannot redirect the {name!r} baseline")
        base = by_name.get(name) or replace(by_name["GetUser"], name=name, cached=False)
        by_name[name] = replace(base, method=method)
    if only is not None:
        unknown = [name for name in only if name not in by_name]
        if unknown:
            raise ValueError(f"--only names unknown paths {unknown}; known: {sorted(by_name)}")
        wanted = set(only) | {BASELINE, REFERENCE}
        by_name = {name: path for name, path in by_name.items() if name in wanted}
    baselines = [by_name[BASELINE], by_name[REFERENCE]]
    others = [path for name, path in by_name.items() if name not in (BASELINE, REFERENCE)]
    return [*baselines, *with_cache_modes(others, modes)]


def with_cache_modes(paths: Sequence[BenchPath[Any]], modes: Sequence[CacheMode]) -> list[BenchPath[Any]]:
    """Each cached path as one row per mode, next to each other (so rounds interleave a path's modes);
    the uncached paths as they are, served by the uncached service whatever the modes."""
    rows: list[BenchPath[Any]] = []
    for path in paths:
        if not path.cached:
            rows.append(path)
            continue
        rows.extend(
            replace(
                path,
                name=mode.row(path.name),
                server=mode.server,
                mode=mode,
                uncached_row=None if mode is UNCACHED_MODE else UNCACHED_MODE.row(path.name),
            )
            for mode in modes
        )
    return rows
