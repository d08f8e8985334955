"""A sliding-window limit on failed logins, per email and per client address.

A login is refused (RESOURCE_EXHAUSTED with RetryInfo) while its email has ``per_email`` failures, or its
client address ``per_ip`` failures, within the last ``window_seconds`` — before the password is checked, so a
guesser who hit the limit learns nothing and costs no hash. A success clears the email's failures (not the
address's: one account's owner logging in says nothing about the other guesses from that address). Unknown
emails count like wrong passwords, so the limit tells nobody which accounts exist.

The windows live in Redis, shared by every replica: one sorted set of failure times per key, trimmed and
read by one atomic script, on Redis's own clock (``TIME``) so that replicas with skewed clocks agree. Keys
hold SHA-256 digests, never emails or addresses. Without Redis (REDIS_URL unset, or Redis failing) each
process keeps its own windows and says so: a start line and the gauge
``dataservice_login_limit_backend{backend="process"}``, or one outage line and the counter
``dataservice_login_limit_fallback_total`` per call decided without Redis. Every failure is also recorded in
the process, so that losing Redis in the middle of an attack does not reset what this replica saw.

Limits of the design: the check and the record are separate atomic steps with the password check between
them, so guesses sent in parallel all pass the check before any is recorded — the limit may be overshot by
the number of guesses in flight at once. A success while Redis is down clears the email's failures in this
process only; Redis keeps counting them until they leave the window. The key digests are unkeyed, which
keeps emails out of Redis but not IPv4 addresses from someone who tries all 2^32 of them.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass

import redis.asyncio as redis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from server.cache.keys import PREFIX
from server.domain.users import email_key
from server.errors import ResourceExhausted
from server.outage import OutageLog

log = logging.getLogger(__name__)

_MAX_PROCESS_KEYS = 100_000  # bounds the memory of the per-process windows; the oldest keys go first

# KEYS: the window keys; ARGV[1] window in ms, ARGV[i + 1] the limit of KEYS[i] (0: none). Returns the ms until
# every key is under its limit again; 0 when none is at it.
_CHECK = """
local now_parts = redis.call('TIME')
local now = now_parts[1] * 1000 + math.floor(now_parts[2] / 1000)
local window = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if limit > 0 and count >= limit then
    local oldest_to_leave = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local key_wait = tonumber(oldest_to_leave[2]) + window - now
    if key_wait > wait then wait = key_wait end
  end
end
return wait
"""

# KEYS: the window keys; ARGV[1] window in ms, ARGV[2] a unique member suffix. Records one failure in each.
_RECORD = """
local now_parts = redis.call('TIME')
local now = now_parts[1] * 1000 + math.floor(now_parts[2] / 1000)
local window = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  redis.call('ZADD', key, now, now .. ':' .. ARGV[2])
  redis.call('PEXPIRE', key, window)
end
return 0
"""


@dataclass(frozen=True)
class LoginLimits:
    """How many failures within ``window_seconds`` lock an email or a client address out; 0 turns one off."""

    per_email: int
    per_ip: int
    window_seconds: float


class _ProcessWindows:
    """The same sliding windows in this process only, on the monotonic clock."""

    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait_seconds(self, keyed_limits: list[tuple[str, int]]) -> float:
        now = time.monotonic()
        wait = 0.0
        for key, limit in keyed_limits:
            times = self._trimmed(key, now)
            if limit > 0 and times is not None and len(times) >= limit:
                wait = max(wait, times[len(times) - limit] + self._window - now)
        return wait

    def record(self, keys: list[str]) -> None:
        now = time.monotonic()
        for key in keys:
            times = self._trimmed(key, now)
            if times is None:
                times = self._failures[key] = deque()
            times.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > _MAX_PROCESS_KEYS:
            self._failures.popitem(last=False)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def _trimmed(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is not None:
            while times and times[0] <= now - self._window:
                times.popleft()
        return times


class LoginLimiter:
    """Checks and records failed logins; ``check`` raises ResourceExhausted while a window is full."""

    def __init__(
        self, limits: LoginLimits, registry: CollectorRegistry, *, redis_url: str | None, timeout_seconds: float
    ) -> None:
        self._limits = limits
        self._window_ms = max(1, int(limits.window_seconds * 1000))
        self._process = _ProcessWindows(limits.window_seconds)
        self._fallbacks = Counter(
            "dataservice_login_limit_fallback_total",
            "Login limit decisions made from this process's own windows because Redis failed.",
            registry=registry,
        )
        backend = Gauge(
            "dataservice_login_limit_backend",
            "Where the login failure windows are kept: 1 for the backend in use.",
            ["backend"],
            registry=registry,
        )
        self._client: redis.Redis | None = None
        if redis_url is None:
            log.warning("login failure limits are kept per process: without REDIS_URL each replica counts alone")
        else:
            self._client = redis.Redis.from_url(
                redis_url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
            )
            self._check_script = self._client.register_script(_CHECK)
            self._record_script = self._client.register_script(_RECORD)
        backend.labels("redis").set(1 if self._client is not None else 0)
        backend.labels("process").set(0 if self._client is not None else 1)
        self._outage = OutageLog(log, "login limit Redis (limits kept per process meanwhile)")

    async def check(self, email: str, client_ip: str | None) -> None:
        """Raises ResourceExhausted when the email or the address has used up its failures."""
        keyed = self._keyed_limits(email, client_ip)
        if not keyed:
            return
        wait = None
        if self._client is not None:
            try:
                wait_ms = await self._check_script(
                    keys=[key for key, _ in keyed], args=[self._window_ms, *(limit for _, limit in keyed)]
                )
                self._outage.succeeded()
                wait = int(wait_ms) / 1000
            except (RedisError, OSError) as exc:
                self._outage.failed("check", exc)
                self._fallbacks.inc()
        if wait is None:
            wait = self._process.wait_seconds(keyed)
        if wait > 0:
            raise ResourceExhausted(
                "too many failed logins for this account or address; retry after the delay in RetryInfo",
                retry_after_seconds=wait,
                reason="LOGIN_RATE_LIMITED",
            )

    async def failed(self, email: str, client_ip: str | None) -> None:
        keys = [key for key, _ in self._keyed_limits(email, client_ip)]
        if not keys:
            return
        self._process.record(keys)
        if self._client is not None:
            try:
                await self._record_script(keys=keys, args=[self._window_ms, uuid.uuid4().hex])
                self._outage.succeeded()
            except (RedisError, OSError) as exc:
                self._outage.failed("record", exc)

    async def succeeded(self, email: str) -> None:
        """Clears the email's failures: its owner proved the password."""
        if self._limits.per_email <= 0:
            return
        key = _key("email", email_key(email))
        self._process.clear(key)
        if self._client is not None:
            try:
                await self._client.delete(key)
                self._outage.succeeded()
            except (RedisError, OSError) as exc:
                self._outage.failed("clear", exc)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _keyed_limits(self, email: str, client_ip: str | None) -> list[tuple[str, int]]:
        keyed: list[tuple[str, int]] = []
        if self._limits.per_email > 0:
            keyed.append((_key("email", email_key(email)), self._limits.per_email))
        if client_ip and self._limits.per_ip > 0:
            keyed.append((_key("ip", client_ip), self._limits.per_ip))
        return keyed


def _key(scope: str, value: str) -> str:
    return f"{PREFIX}:login-failures:{scope}:{hashlib.sha256(value.encode()).hexdigest()}"
