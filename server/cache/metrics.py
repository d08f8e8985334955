"""Prometheus metrics of the cache, in the service's registry: what it serves, what it costs, how it is doing.

Counters are labelled by entity (``user``, ``user-email``, ``session``, ``content``), taken from the key, with
their children cached per entity: ``labels()`` is too slow for every read.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.cache import keys

_LAG_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class CacheMetrics:
    """One set per process. ``tier`` of a hit: ``process`` (near cache or in-process cache) or ``shared`` (Redis)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._hits = Counter(
            "dataservice_cache_hits_total", "Reads answered by the cache.", ["entity", "tier"], registry=registry
        )
        self._misses = Counter(
            "dataservice_cache_misses_total", "Reads that went to PostgreSQL.", ["entity"], registry=registry
        )
        self._coalesced = Counter(
            "dataservice_cache_coalesced_total",
            "Reads that waited for the same key's read already in flight in this process instead of making their own.",
            ["entity"],
            registry=registry,
        )
        self._fills = Counter(
            "dataservice_cache_fills_total",
            "Entries offered to the cache after a miss; refused when a write invalidated the lease meanwhile.",
            ["entity", "outcome"],
            registry=registry,
        )
        self.invalidations = Counter(
            "dataservice_cache_invalidations_total",
            "Keys invalidated, by who asked: a write of this process, or the outbox sweep.",
            ["origin"],
            registry=registry,
        )
        self.errors = Counter(
            "dataservice_cache_errors_total", "Failed Redis operations, by operation.", ["operation"], registry=registry
        )
        self.breaker_open = Gauge(
            "dataservice_cache_breaker_open",
            "1 while the cache does not call Redis after failures (reads go to PostgreSQL), else 0.",
            registry=registry,
        )
        self.near_enabled = Gauge(
            "dataservice_cache_near_enabled",
            "1 while the near cache serves (its invalidation stream is live and on time), else 0.",
            registry=registry,
        )
        self.near_evictions = Counter(
            "dataservice_cache_near_evictions_total",
            "Entries the near cache dropped: invalidated, over capacity, or flushed with everything.",
            ["reason"],
            registry=registry,
        )
        self.near_flushes = Counter(
            "dataservice_cache_near_flushes_total",
            "Times the near cache dropped everything (invalidation stream lost or late, Redis flushed).",
            registry=registry,
        )
        self.invalidation_lag = Histogram(
            "dataservice_cache_invalidation_lag_seconds",
            "Time from a write to Redis until its invalidation reached this process (heartbeat probes).",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self._near_size = Gauge(
            "dataservice_cache_near_bytes", "Bytes of values held by the near cache.", registry=registry
        )
        self._children: dict[str, tuple[Counter, Counter, Counter, Counter, Counter, Counter]] = {}

    def watch_near_size(self, size: Callable[[], float]) -> None:
        self._near_size.set_function(size)

    def _of(self, key: str) -> tuple[Counter, Counter, Counter, Counter, Counter, Counter]:
        entity = keys.entity(key)
        children = self._children.get(entity)
        if children is None:
            children = (
                self._hits.labels(entity, "process"),
                self._hits.labels(entity, "shared"),
                self._misses.labels(entity),
                self._coalesced.labels(entity),
                self._fills.labels(entity, "stored"),
                self._fills.labels(entity, "refused"),
            )
            self._children[entity] = children
        return children

    def hit(self, key: str, *, in_process: bool) -> None:
        self._of(key)[0 if in_process else 1].inc()

    def miss(self, key: str) -> None:
        self._of(key)[2].inc()

    def coalesced(self, key: str) -> None:
        self._of(key)[3].inc()

    def filled(self, key: str, stored: bool) -> None:
        self._of(key)[4 if stored else 5].inc()
