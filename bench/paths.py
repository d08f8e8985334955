"""The table of measured paths: what to call, with which requests, on which seeded data.

Adding a path is one ``BenchPath`` row (and a seed, if it reads new data). Every path
is compared with ``echo``, the first row, in the same run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, TypeVar

import grpc
from dataservice.v1 import user_service_pb2 as pb

from bench import echo_server
from bench.metrics import split_method
from bench.seed import SeededUser, seed_users

D = TypeVar("D")
T = TypeVar("T")
Server = Literal["service", "echo"]
USER_SERVICE = "/dataservice.v1.UserService"
BASELINE = "echo"


@dataclass(frozen=True)
class SeedContext:
    """What a seed may use: a channel to the service and the size asked for (``--users``)."""

    channel: grpc.aio.Channel
    users: int


@dataclass(frozen=True)
class Seed(Generic[D]):
    """Data the runner creates once, before any load, and hands to every path naming it."""

    name: str
    load: Callable[[SeedContext], Awaitable[D]]


@dataclass(frozen=True)
class BenchPath(Generic[D]):
    """One measured gRPC method.

    build(data, count) returns ``count`` serialized requests spread over the seeded
    data; each becomes one h2load process's frame (h2load cannot vary the body).
    """

    name: str
    method: str  # "/package.Service/Method", as on the wire and in the metrics' labels
    seed: Seed[D]
    build: Callable[[D, int], list[bytes]]
    server: Server = "service"


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


USERS: Seed[list[SeededUser]] = Seed("users", _load_users)


def get_user_requests(users: list[SeededUser], count: int) -> list[bytes]:
    return [pb.GetUserRequest(id=user.id).SerializeToString() for user in spread(users, count)]


def lookup_user_requests(users: list[SeededUser], count: int) -> list[bytes]:
    return [pb.LookupUserRequest(email=user.email).SerializeToString() for user in spread(users, count)]


PATHS: tuple[BenchPath[Any], ...] = (
    # The echo returns the GetUser request bytes: the same request size, nothing else.
    BenchPath(BASELINE, echo_server.PATH, USERS, get_user_requests, server="echo"),
    BenchPath("GetUser", f"{USER_SERVICE}/GetUser", USERS, get_user_requests),
    BenchPath("LookupUser", f"{USER_SERVICE}/LookupUser", USERS, lookup_user_requests),
)


def select_paths(
    only: Sequence[str] | None, overrides: dict[str, str], table: Sequence[BenchPath[Any]] = PATHS
) -> list[BenchPath[Any]]:
    """The paths of this run, the echo first.

    overrides maps a name to a method path: an existing name keeps its requests and
    seed and calls that method instead; a new name is added and sends GetUser's
    requests (enough to point the runner at a method that fails or does not exist).
    only, when given, keeps the echo and the named paths.
    """
    by_name = {path.name: path for path in table}
    for name, method in overrides.items():
        split_method(method)  # fail early on a malformed method path
        if name == BASELINE:
            raise ValueError(f"--path cannot redirect the {BASELINE!r} baseline")
        base = by_name.get(name) or replace(by_name["GetUser"], name=name)
        by_name[name] = replace(base, method=method)
    if only is not None:
        unknown = [name for name in only if name not in by_name]
        if unknown:
            raise ValueError(f"--only names unknown paths {unknown}; known: {sorted(by_name)}")
        wanted = set(only) | {BASELINE}
        by_name = {name: path for name, path in by_name.items() if name in wanted}
    return [by_name[BASELINE], *(path for name, path in by_name.items() if name != BASELINE)]
