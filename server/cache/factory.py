"""Chooses the cache implementation that the settings ask for."""

from __future__ import annotations

from server.cache.base import Cache, NoCache
from server.cache.memory import MemoryCache
from server.cache.redis import RedisCache
from server.config import CacheBackend, Settings


def create_cache(settings: Settings) -> Cache:
    if settings.cache_backend is CacheBackend.REDIS:
        assert settings.redis_url is not None  # Settings.from_env refuses redis without REDIS_URL
        return RedisCache(settings.redis_url.reveal(), timeout_seconds=settings.redis_timeout_seconds)
    if settings.cache_backend is CacheBackend.MEMORY:
        return MemoryCache()
    return NoCache()
