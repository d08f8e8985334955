"""Chooses the cache implementation that the settings ask for."""

from __future__ import annotations

from collections.abc import Callable

from server.cache.base import Cache, NoCache
from server.cache.memory import MemoryCache
from server.cache.metrics import CacheMetrics
from server.cache.near import NearCache
from server.cache.redis import Mode, RedisCache
from server.config import CacheBackend, Settings


def create_cache(settings: Settings, metrics: CacheMetrics, on_mode_change: Callable[[Mode], None]) -> Cache:
    """The cache; a near cache starts following Redis's invalidations at once (it needs a running loop).
    ``on_mode_change`` hears whether the shared cache is in use (server/cache/redis.py)."""
    if settings.cache_backend is CacheBackend.REDIS:
        assert settings.redis_url is not None  # Settings.from_env refuses redis without REDIS_URL
        url = settings.redis_url.reveal()
        shared = RedisCache(
            url, metrics, timeout_seconds=settings.redis_timeout_seconds, on_mode_change=on_mode_change
        )
        if not settings.cache_near:
            return shared
        near = NearCache(
            shared,
            url,
            metrics,
            max_bytes=settings.cache_near_max_bytes,
            ttl_seconds=settings.cache_near_ttl_seconds,
            timeout_seconds=settings.redis_timeout_seconds,
            heartbeat_seconds=settings.cache_near_heartbeat_seconds,
            max_lag_seconds=settings.cache_near_max_lag_seconds,
        )
        near.start()
        return near
    if settings.cache_backend is CacheBackend.MEMORY:
        return MemoryCache()
    return NoCache()
