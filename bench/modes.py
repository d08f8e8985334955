"""The modes a cached path is measured in: one service process each, differing only in its cache settings or,
for ``2-workers``, in serving from two worker processes (WORKERS=2, uncached) instead of one.

Every mode reads the same database; the Redis modes share one private ``redis-server`` the runner starts. A
path measured in a mode is a row of its own, ``GetUser[redis]``, on that mode's process; the uncached row keeps
the path's plain name (``GetUser``), as before the modes existed, and is what the other rows are compared with:
``GetUser[2-workers]``'s ``vs_uncached`` is two workers against one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

UNCACHED = "uncached"
NEAR = "near"


@dataclass(frozen=True)
class CacheMode:
    """A named service configuration; uses_redis says whether it needs REDIS_URL."""

    name: str
    env: Mapping[str, str]
    uses_redis: bool

    @property
    def server(self) -> str:
        """The name of the service process serving this mode (the uncached one is today's ``service``)."""
        return "service" if self.name == UNCACHED else f"service-{self.name}"

    def row(self, path: str) -> str:
        """The report row of path in this mode."""
        return path if self.name == UNCACHED else f"{path}[{self.name}]"

    def environment(self, redis_url: str | None) -> dict[str, str]:
        """The environment this mode adds to a service process."""
        if not self.uses_redis:
            return dict(self.env)
        if redis_url is None:
            raise ValueError(f"cache mode {self.name!r} needs a Redis URL")
        return {**self.env, "REDIS_URL": redis_url}


_REDIS_SHARED = {"CACHE_BACKEND": "redis", "CACHE_NEAR": "false"}
MODES: tuple[CacheMode, ...] = (
    CacheMode(UNCACHED, {"CACHE_BACKEND": "none"}, uses_redis=False),
    # Entries expire a millisecond after their fill, so every read takes the miss path: lease, database, fill.
    CacheMode("redis-cold", {**_REDIS_SHARED, "CACHE_TTL_SECONDS": "0.001"}, uses_redis=True),
    CacheMode("redis", _REDIS_SHARED, uses_redis=True),
    CacheMode(NEAR, {"CACHE_BACKEND": "redis", "CACHE_NEAR": "true"}, uses_redis=True),
    CacheMode("2-workers", {"CACHE_BACKEND": "none", "WORKERS": "2"}, uses_redis=False),
)
BY_NAME = {mode.name: mode for mode in MODES}
UNCACHED_MODE = BY_NAME[UNCACHED]


def parse_modes(names: Sequence[str]) -> tuple[CacheMode, ...]:
    """The named modes in MODES' order (cold before warm, shared before near), each once."""
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown cache modes {unknown}; known: {[mode.name for mode in MODES]}")
    if not names:
        raise ValueError("at least one cache mode is needed")
    return tuple(mode for mode in MODES if mode.name in names)
