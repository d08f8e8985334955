"""Prometheus metrics of the cache, in the service's registry: what it serves, what it costs, how it is doing.

Counters are labelled by entity (``user``, ``user-email``, ``session``, ``content``), taken from the key.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.cache import keys
from server.metrics import Counts

_LAG_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class CacheMetrics:
    """One set per process. ``tier`` of a hit: ``process`` (near cache or in-process cache) or ``shared`` (Redis).

    The per-read counts are plain integers (server/metrics.py ``Counts``): a near-cache hit costs a few
    microseconds in all, and prometheus-client's locked counters would be a good share of them.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._hits = Counts(
            "dataservice_cache_hits_total", "Reads answered by the cache.", ["entity", "tier"], registry
        ).counts
        self._misses = Counts(
            "dataservice_cache_misses_total", "Reads that went to PostgreSQL.", ["entity"], registry
        ).counts
        self._coalesced = Counts(
            "dataservice_cache_coalesced_total",
            "Reads that waited for the same key's read already in flight in this process instead of making their own.",
            ["entity"],
            registry,
        ).counts
        self._fills = Counts(
            "dataservice_cache_fills_total",
            "Entries offered to the cache after a miss; refused when a write invalidated the lease meanwhile.",
            ["entity", "outcome"],
            registry,
        ).counts
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

    def watch_near_size(self, size: Callable[[], float]) -> None:
        self._near_size.set_function(size)

    def hit(self, key: str, *, in_process: bool) -> None:
        labels = (keys.entity(key), "process" if in_process else "shared")
        self._hits[labels] = self._hits.get(labels, 0) + 1

    def miss(self, key: str) -> None:
        labels = (keys.entity(key),)
        self._misses[labels] = self._misses.get(labels, 0) + 1

    def coalesced(self, key: str) -> None:
        labels = (keys.entity(key),)
        self._coalesced[labels] = self._coalesced.get(labels, 0) + 1

    def filled(self, key: str, stored: bool) -> None:
        labels = (keys.entity(key), "stored" if stored else "refused")
        self._fills[labels] = self._fills.get(labels, 0) + 1
