"""Settings: the service's whole configuration, read once from the environment and validated at start.

Nothing else in the service reads ``os.environ``. Every invalid value fails ``Settings.from_env`` with one
``ConfigError`` line naming the variable and the bad value (secrets masked), so a bad deploy stops at once.
The variables and their defaults are listed in the README's configuration table.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from server.cpus import usable_cpu_count
from server.secret import Secret, mask_url

T = TypeVar("T")

# Page tokens made under this secret are readable by anyone who has the source: fine on a laptop, and the
# server warns at start when it is in use. Production sets PAGE_TOKEN_SECRET, the same on every replica.
DEVELOPMENT_PAGE_TOKEN_SECRET = "dataservice development page token secret"
_MIN_SECRET_LENGTH = 16
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# The sslmodes under which a connection is never made without TLS.
TLS_REQUIRED = ("require", "verify-ca", "verify-full")
# The fewest connections a worker's pool gets when WORKERS is left to its default.
_MIN_WORKER_CONNECTIONS = 2
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """An environment variable is missing or has a value the service cannot use."""


class CacheBackend(enum.Enum):
    """Where the read-through cache keeps entries."""

    REDIS = "redis"  # shared by all replicas; the production choice
    MEMORY = "memory"  # in-process; the development default when REDIS_URL is unset
    NONE = "none"  # no cache: every read goes to PostgreSQL (benchmarks of the uncached path)


@dataclass(frozen=True)
class Settings:
    """Typed, immutable configuration. Build it with ``Settings.from_env(os.environ)``."""

    grpc_address: str = "[::]:50051"
    """host:port the gRPC server binds; port 0 picks a free one (tests)."""
    grpc_tls_cert_file: Path | None = None
    """PEM certificate chain of the gRPC port; with GRPC_TLS_KEY_FILE it serves TLS only."""
    grpc_tls_key_file: Path | None = None
    grpc_tls_client_ca_file: Path | None = None
    """PEM CA bundle: callers must present a certificate it signed (mutual TLS)."""
    grpc_keepalive_time_seconds: float = 60.0
    """How often the server pings an idle connection to find dead peers."""
    grpc_keepalive_timeout_seconds: float = 20.0
    """How long a ping may go unanswered before the connection is closed."""
    grpc_min_client_ping_interval_seconds: float = 20.0
    """The shortest interval between a client's keepalive pings the server accepts; clients pinging more often
    are sent GOAWAY ``too_many_pings``. The shipped client pings every 30 s (dataservice.channel)."""
    grpc_max_connection_age_seconds: float = 300.0
    """Connections older than this are closed gracefully, so that clients reconnect and spread over replicas
    added since; 0 keeps them forever."""
    grpc_max_connection_age_grace_seconds: float = 30.0
    """How long calls in flight on a connection closed for its age may still take."""
    workers: int = 1
    """Serving processes sharing the gRPC port. Default: the usable CPUs, at most half the connection budget,
    when the cache can be shared between processes (CACHE_BACKEND redis or none), else 1."""
    db_connection_budget: int = 10
    """Most PostgreSQL connections of the replica, all workers together (default DB_POOL_MAX_SIZE)."""
    database_url: Secret | None = None
    """PostgreSQL DSN; None means: start the embedded PostgreSQL in embedded_pg_dir."""
    embedded_pg_dir: Path = Path(".data/postgres")
    """Data directory of the embedded PostgreSQL; it persists across restarts."""
    redis_url: Secret | None = None
    """Redis URL for the shared cache; None means an in-process cache."""
    cache_backend: CacheBackend = CacheBackend.MEMORY
    cache_ttl_seconds: float = 300.0
    """How long a cached entity may live before it is read again from PostgreSQL (each entity's default)."""
    cache_user_ttl_seconds: float = 300.0
    cache_session_ttl_seconds: float = 300.0
    """A cached session never outlives its own expiry, whatever this says."""
    cache_content_ttl_seconds: float = 300.0
    cache_negative_ttl_seconds: float = 5.0
    """How long "no such row" is cached; the write that creates the row clears it at once."""
    cache_near: bool = False
    """Keep hot entries in the process in front of Redis (default on with the Redis backend)."""
    cache_near_max_bytes: int = 64 * 1024 * 1024
    cache_near_ttl_seconds: float = 30.0
    """Hard cap on a near entry's life, whatever the invalidation stream says."""
    cache_near_heartbeat_seconds: float = 0.1
    cache_near_max_lag_seconds: float = 0.4
    """Invalidations later than this empty the near cache; with the heartbeat, the cross-replica staleness bound."""
    cache_outbox_sweep_seconds: float = 1.0
    """How often each replica makes the invalidations that writers recorded but did not confirm (0: never)."""
    cache_outbox_grace_seconds: float = 1.0
    """How long the sweep leaves a recorded invalidation to its writer before making it itself."""
    redis_timeout_seconds: float = 0.25
    """Socket timeout of every Redis call: an unreachable Redis must cost an RPC little."""
    db_pool_min_size: int = 2
    db_pool_max_size: int = 10
    """Most connections of one process's pool: DB_POOL_MAX_SIZE, lowered to DB_CONNECTION_BUDGET // WORKERS."""
    db_connect_timeout_seconds: float = 5.0
    db_command_timeout_seconds: float = 10.0
    """Budget of one RPC's database work when the caller sets no deadline."""
    db_pool_acquire_timeout_seconds: float = 1.0
    """Longest a call waits for a pooled connection while every one is busy (its deadline, when sooner, wins);
    past it the call is answered RESOURCE_EXHAUSTED (DB_POOL_EXHAUSTED) instead of queueing until its deadline."""
    db_statement_cache_size: int = 100
    """asyncpg prepared-statement cache per connection; 0 behind PgBouncer in transaction mode."""
    db_pool_max_queries: int = 50000
    """Queries a pooled connection runs before it is replaced, so that no PostgreSQL backend grows for ever."""
    db_pool_max_idle_seconds: float = 300.0
    """How long a pooled connection may sit idle before it is closed; 0 keeps idle connections open."""
    db_tcp_keepalive_seconds: int = 60
    """Idle seconds after which a pooled TCP connection is probed (TCP keepalive), so that a peer gone silent
    (a failover, a dropped NAT entry) is found dead instead of hanging the next query; 0 leaves it to the OS."""
    db_application_name: str = "dataservice"
    """application_name of the pool's connections: what pg_stat_activity and PostgreSQL's logs call them."""
    db_pgbouncer: bool = False
    """The database is reached through PgBouncer in transaction pooling mode: no statement is prepared for
    longer than its own execution (DB_STATEMENT_CACHE_SIZE is 0), since the next transaction of the same
    connection may run on another server connection."""
    migrate_on_start: bool = True
    migration_timeout_seconds: float = 600.0
    """How long the server's own ``migrate up`` may run before it is rolled back and retried later."""
    migrations_dir: Path = Path("migrations")
    health_check_interval_seconds: float = 2.0
    shutdown_drain_seconds: float = 3.0
    """After SIGTERM, how long health says NOT_SERVING while the server still serves, so balancers move away."""
    shutdown_grace_seconds: float = 10.0
    """After the drain, how long calls in flight may take to finish."""
    metrics_port: int | None = None
    """Port of the Prometheus /metrics endpoint; None turns it off."""
    log_level: str = "INFO"
    page_token_secret: Secret = Secret(DEVELOPMENT_PAGE_TOKEN_SECRET)
    """Key material of the page tokens; replicas that share it continue each other's listings."""
    password_hash_time_cost: int = 3
    password_hash_memory_kib: int = 65536
    session_purge_interval_seconds: float = 300.0
    """How often ended sessions are purged; 0 turns the purge off on this replica."""
    session_purge_batch_size: int = 1000
    """Most sessions one purge transaction deletes."""
    otel_exporter_otlp_endpoint: str | None = None
    """OTLP/gRPC endpoint of a collector (``http://collector:4317``); unset means no tracing at all."""
    otel_service_name: str = "dataservice"
    """The service.name resource of the spans."""
    db_slow_query_seconds: float = 0.5
    """Database calls slower than this are logged (store function and duration, never parameters); 0: never."""
    embedding_ef_search: int = 100
    """HNSW candidate list size of a search that names none (pgvector's hnsw.ef_search), 1 to 1000."""
    embedding_scan_budget: int = 20000
    """Index entries a filtered search may visit when the request names no scan_budget (hnsw.max_scan_tuples)."""
    embedding_import_timeout_seconds: float = 3600.0
    """Longest an ImportEmbeddings call may run (its caller's deadline, when shorter, wins)."""
    embedding_index_build_memory: str = "512MB"
    """maintenance_work_mem of the HNSW build at the end of an import into an empty collection."""
    embedding_purge_interval_seconds: float = 60.0
    """How often expired embeddings are deleted; 0 turns the purge off on this replica."""
    embedding_purge_batch_size: int = 1000
    """Most embeddings of one collection one purge statement deletes."""
    recommendation_collection: str = "content"
    """The embedding collection whose items stand for content (by content_id): what taste vectors are made of."""
    recommendation_weights: tuple[tuple[str, float], ...] = (("view", 1.0), ("like", 3.0), ("share", 5.0), ("bookmark", 4.0))
    """How much each interaction type counts, in taste vectors and in popularity."""
    recommendation_feed_size: int = 200
    """Most recommendations a user's feed holds (all pages together), 1 to 1000."""
    recommendation_recent_interactions: int = 50
    """How many of a user's latest interactions make their taste vector."""
    recommendation_warm_interactions: int = 10
    """Interactions from which a feed is all similar content; below, popular content is blended in pro rata."""
    recommendation_popularity_refresh_seconds: float = 60.0
    """How often the popularity summary is refreshed; 0 turns the refresh off on this replica."""
    cache_recommendation_ttl_seconds: float = 60.0
    """How long a computed feed is served from the cache; a user's own interactions, feedback and precomputed
    list replace it at once, while popularity and newly embedded content reach it within this time."""
    login_failures_per_email: int = 5
    """Failed logins within the window that lock an email out of AuthenticateUser; 0 turns this limit off."""
    login_failures_per_ip: int = 50
    """Failed logins within the window that lock a client address out; 0 turns this limit off."""
    login_failure_window_seconds: float = 900.0
    """How far back failed logins count."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Builds settings from an environment mapping; raises ConfigError naming the first bad variable."""
        read = _Reader(env)
        database_url = _database_url(read)
        redis_url = read.get("REDIS_URL", _redis_url, None, secret=True)
        default_backend = CacheBackend.REDIS if redis_url else CacheBackend.MEMORY
        backend = read.get("CACHE_BACKEND", _enum(CacheBackend), default_backend)
        if backend is CacheBackend.REDIS and redis_url is None:
            raise ConfigError("CACHE_BACKEND: 'redis' needs REDIS_URL to be set")
        near = read.get("CACHE_NEAR", _bool, backend is CacheBackend.REDIS)
        if near and backend is not CacheBackend.REDIS:
            raise ConfigError("CACHE_NEAR: the near cache needs CACHE_BACKEND=redis (its invalidations come from Redis)")
        budget = read.get(
            "DB_CONNECTION_BUDGET",
            _positive(int),
            read.get("DB_POOL_MAX_SIZE", _positive(int), cls.db_pool_max_size),
        )
        workers = _workers(read, backend, budget)
        ttl = read.get("CACHE_TTL_SECONDS", _positive(float), cls.cache_ttl_seconds)
        pgbouncer = read.get("DB_PGBOUNCER", _bool, cls.db_pgbouncer)
        settings = cls(
            grpc_address=read.get("GRPC_ADDRESS", _address, cls.grpc_address),
            **_tls_files(read),
            grpc_keepalive_time_seconds=read.get(
                "GRPC_KEEPALIVE_TIME_SECONDS", _positive(float), cls.grpc_keepalive_time_seconds
            ),
            grpc_keepalive_timeout_seconds=read.get(
                "GRPC_KEEPALIVE_TIMEOUT_SECONDS", _positive(float), cls.grpc_keepalive_timeout_seconds
            ),
            grpc_min_client_ping_interval_seconds=read.get(
                "GRPC_MIN_CLIENT_PING_INTERVAL_SECONDS", _positive(float), cls.grpc_min_client_ping_interval_seconds
            ),
            grpc_max_connection_age_seconds=read.get(
                "GRPC_MAX_CONNECTION_AGE_SECONDS", _non_negative(float), cls.grpc_max_connection_age_seconds
            ),
            grpc_max_connection_age_grace_seconds=read.get(
                "GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS",
                _non_negative(float),
                cls.grpc_max_connection_age_grace_seconds,
            ),
            workers=workers,
            database_url=database_url,
            embedded_pg_dir=read.get("EMBEDDED_PG_DIR", Path, cls.embedded_pg_dir),
            redis_url=Secret(redis_url) if redis_url else None,
            cache_backend=backend,
            cache_ttl_seconds=ttl,
            cache_user_ttl_seconds=read.get("CACHE_USER_TTL_SECONDS", _positive(float), ttl),
            cache_session_ttl_seconds=read.get("CACHE_SESSION_TTL_SECONDS", _positive(float), ttl),
            cache_content_ttl_seconds=read.get("CACHE_CONTENT_TTL_SECONDS", _positive(float), ttl),
            cache_negative_ttl_seconds=read.get(
                "CACHE_NEGATIVE_TTL_SECONDS", _non_negative(float), cls.cache_negative_ttl_seconds
            ),
            cache_near=near,
            cache_near_max_bytes=read.get("CACHE_NEAR_MAX_BYTES", _positive(int), cls.cache_near_max_bytes),
            cache_near_ttl_seconds=read.get("CACHE_NEAR_TTL_SECONDS", _positive(float), cls.cache_near_ttl_seconds),
            cache_near_heartbeat_seconds=read.get(
                "CACHE_NEAR_HEARTBEAT_SECONDS", _positive(float), cls.cache_near_heartbeat_seconds
            ),
            cache_near_max_lag_seconds=read.get(
                "CACHE_NEAR_MAX_LAG_SECONDS", _positive(float), cls.cache_near_max_lag_seconds
            ),
            cache_outbox_sweep_seconds=read.get(
                "CACHE_OUTBOX_SWEEP_SECONDS", _non_negative(float), cls.cache_outbox_sweep_seconds
            ),
            cache_outbox_grace_seconds=read.get(
                "CACHE_OUTBOX_GRACE_SECONDS", _non_negative(float), cls.cache_outbox_grace_seconds
            ),
            redis_timeout_seconds=read.get("REDIS_TIMEOUT_SECONDS", _positive(float), cls.redis_timeout_seconds),
            db_pool_min_size=read.get("DB_POOL_MIN_SIZE", _non_negative_int, cls.db_pool_min_size),
            db_pool_max_size=read.get("DB_POOL_MAX_SIZE", _positive(int), cls.db_pool_max_size),
            db_connect_timeout_seconds=read.get(
                "DB_CONNECT_TIMEOUT_SECONDS", _positive(float), cls.db_connect_timeout_seconds
            ),
            db_command_timeout_seconds=read.get(
                "DB_COMMAND_TIMEOUT_SECONDS", _positive(float), cls.db_command_timeout_seconds
            ),
            db_pool_acquire_timeout_seconds=read.get(
                "DB_POOL_ACQUIRE_TIMEOUT_SECONDS", _positive(float), cls.db_pool_acquire_timeout_seconds
            ),
            db_statement_cache_size=read.get(
                "DB_STATEMENT_CACHE_SIZE", _non_negative_int, 0 if pgbouncer else cls.db_statement_cache_size
            ),
            db_pool_max_queries=read.get("DB_POOL_MAX_QUERIES", _positive(int), cls.db_pool_max_queries),
            db_pool_max_idle_seconds=read.get(
                "DB_POOL_MAX_IDLE_SECONDS", _non_negative(float), cls.db_pool_max_idle_seconds
            ),
            # Linux refuses a TCP_KEEPIDLE above 32767 s: refused here, not at every connection.
            db_tcp_keepalive_seconds=read.get(
                "DB_TCP_KEEPALIVE_SECONDS", _between(0, 32767), cls.db_tcp_keepalive_seconds
            ),
            db_application_name=read.get("DB_APPLICATION_NAME", _nonempty, cls.db_application_name),
            db_pgbouncer=pgbouncer,
            migrate_on_start=read.get("MIGRATE_ON_START", _bool, cls.migrate_on_start),
            migration_timeout_seconds=read.get(
                "MIGRATION_TIMEOUT_SECONDS", _positive(float), cls.migration_timeout_seconds
            ),
            migrations_dir=read.get("MIGRATIONS_DIR", Path, cls.migrations_dir),
            health_check_interval_seconds=read.get(
                "HEALTH_CHECK_INTERVAL_SECONDS", _positive(float), cls.health_check_interval_seconds
            ),
            shutdown_drain_seconds=read.get("SHUTDOWN_DRAIN_SECONDS", _non_negative(float), cls.shutdown_drain_seconds),
            shutdown_grace_seconds=read.get("SHUTDOWN_GRACE_SECONDS", _non_negative(float), cls.shutdown_grace_seconds),
            metrics_port=read.get("METRICS_PORT", _port, None),
            log_level=read.get("LOG_LEVEL", _choice(LOG_LEVELS, upper=True), cls.log_level),
            page_token_secret=read.get("PAGE_TOKEN_SECRET", _secret, cls.page_token_secret, secret=True),
            password_hash_time_cost=read.get("PASSWORD_HASH_TIME_COST", _positive(int), cls.password_hash_time_cost),
            password_hash_memory_kib=read.get(
                "PASSWORD_HASH_MEMORY_KIB", _at_least(8, int), cls.password_hash_memory_kib
            ),
            session_purge_interval_seconds=read.get(
                "SESSION_PURGE_INTERVAL_SECONDS", _non_negative(float), cls.session_purge_interval_seconds
            ),
            session_purge_batch_size=read.get(
                "SESSION_PURGE_BATCH_SIZE", _positive(int), cls.session_purge_batch_size
            ),
            otel_exporter_otlp_endpoint=read.get("OTEL_EXPORTER_OTLP_ENDPOINT", _otlp_endpoint, None),
            otel_service_name=read.get("OTEL_SERVICE_NAME", _nonempty, cls.otel_service_name),
            db_slow_query_seconds=read.get(
                "DB_SLOW_QUERY_SECONDS", _non_negative(float), cls.db_slow_query_seconds
            ),
            embedding_ef_search=read.get("EMBEDDING_EF_SEARCH", _between(1, 1000), cls.embedding_ef_search),
            embedding_scan_budget=read.get(
                "EMBEDDING_SCAN_BUDGET", _between(1, 1_000_000), cls.embedding_scan_budget
            ),
            embedding_import_timeout_seconds=read.get(
                "EMBEDDING_IMPORT_TIMEOUT_SECONDS", _positive(float), cls.embedding_import_timeout_seconds
            ),
            embedding_index_build_memory=read.get(
                "EMBEDDING_INDEX_BUILD_MEMORY", _memory_size, cls.embedding_index_build_memory
            ),
            embedding_purge_interval_seconds=read.get(
                "EMBEDDING_PURGE_INTERVAL_SECONDS", _non_negative(float), cls.embedding_purge_interval_seconds
            ),
            embedding_purge_batch_size=read.get(
                "EMBEDDING_PURGE_BATCH_SIZE", _positive(int), cls.embedding_purge_batch_size
            ),
            recommendation_collection=read.get(
                "RECOMMENDATION_COLLECTION", _collection_name, cls.recommendation_collection
            ),
            recommendation_weights=read.get("RECOMMENDATION_WEIGHTS", _weights, cls.recommendation_weights),
            recommendation_feed_size=read.get(
                "RECOMMENDATION_FEED_SIZE", _between(1, 1000), cls.recommendation_feed_size
            ),
            recommendation_recent_interactions=read.get(
                "RECOMMENDATION_RECENT_INTERACTIONS", _between(1, 1000), cls.recommendation_recent_interactions
            ),
            recommendation_warm_interactions=read.get(
                "RECOMMENDATION_WARM_INTERACTIONS", _positive(int), cls.recommendation_warm_interactions
            ),
            recommendation_popularity_refresh_seconds=read.get(
                "RECOMMENDATION_POPULARITY_REFRESH_SECONDS",
                _non_negative(float),
                cls.recommendation_popularity_refresh_seconds,
            ),
            cache_recommendation_ttl_seconds=read.get(
                "CACHE_RECOMMENDATION_TTL_SECONDS", _positive(float), cls.cache_recommendation_ttl_seconds
            ),
            login_failures_per_email=read.get(
                "LOGIN_FAILURES_PER_EMAIL", _non_negative_int, cls.login_failures_per_email
            ),
            login_failures_per_ip=read.get("LOGIN_FAILURES_PER_IP", _non_negative_int, cls.login_failures_per_ip),
            login_failure_window_seconds=read.get(
                "LOGIN_FAILURE_WINDOW_SECONDS", _positive(float), cls.login_failure_window_seconds
            ),
        )
        if settings.db_pool_min_size > settings.db_pool_max_size:
            raise ConfigError(
                f"DB_POOL_MIN_SIZE: {settings.db_pool_min_size} is greater than "
                f"DB_POOL_MAX_SIZE ({settings.db_pool_max_size})"
            )
        if settings.db_pgbouncer and settings.db_statement_cache_size:
            raise ConfigError(
                f"DB_STATEMENT_CACHE_SIZE: {settings.db_statement_cache_size} with DB_PGBOUNCER=true; PgBouncer in "
                "transaction mode does not keep a prepared statement for the next transaction: leave it unset or 0"
            )
        return _shared_connections(settings, budget)


def _workers(read: _Reader, backend: CacheBackend, budget: int) -> int:
    """WORKERS, checked against what processes cannot share: the in-process cache (a write through one
    worker would leave the others' copies stale) and an ephemeral port (each worker would get its own).

    Unset, it is the usable CPUs, but no more than leaves each worker _MIN_WORKER_CONNECTIONS of the budget:
    on a machine of 32 CPUs and the default budget of 10, 32 workers of one connection each would answer
    DB_POOL_EXHAUSTED at the first burst; 5 workers of two do not."""
    shareable = backend is not CacheBackend.MEMORY
    ephemeral_port = read.get("GRPC_ADDRESS", _address, Settings.grpc_address).endswith(":0")
    default = 1
    if shareable and not ephemeral_port:
        default = min(usable_cpu_count(), max(1, budget // _MIN_WORKER_CONNECTIONS))
    workers = read.get("WORKERS", _positive(int), default)
    if workers > 1 and not shareable:
        raise ConfigError(
            f"WORKERS: {workers} processes cannot share the in-process cache; set REDIS_URL "
            "(CACHE_BACKEND=redis) or CACHE_BACKEND=none, or WORKERS=1"
        )
    if workers > 1 and ephemeral_port:
        raise ConfigError(f"WORKERS: {workers} processes cannot share port 0 (each would take its own); name a port")
    return workers


def _shared_connections(settings: Settings, budget: int) -> Settings:
    """Sizes each worker's pool so that all of them together stay within DB_CONNECTION_BUDGET."""
    if budget < settings.workers:
        raise ConfigError(
            f"DB_CONNECTION_BUDGET: {budget} connections cannot serve WORKERS={settings.workers} processes "
            "(each needs at least one)"
        )
    pool_max = min(settings.db_pool_max_size, budget // settings.workers)
    return replace(
        settings,
        db_connection_budget=budget,
        db_pool_max_size=pool_max,
        db_pool_min_size=min(settings.db_pool_min_size, pool_max),
    )


class _Reader:
    """Reads one variable at a time and turns a conversion failure into a ConfigError naming it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return value if value not in (None, "") else None

    def get(self, name: str, convert: Callable[[str], T], default: T, *, secret: bool = False) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return convert(value)
        except (ValueError, TypeError) as exc:
            if secret:
                raise ConfigError(f"{name}: {exc}") from None
            shown = mask_url(value) if "://" in value else value
            raise ConfigError(f"{name}: {exc} (got {shown!r})") from None


def _otlp_endpoint(value: str) -> str:
    if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise ValueError("expected an http:// or https:// URL of an OTLP/gRPC collector, like http://collector:4317")
    return value


def _nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a non-empty name")
    return value


def _readable_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ValueError("expected a readable file")
    try:
        path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror})") from None
    return path


def _tls_files(read: _Reader) -> dict[str, Path | None]:
    """The gRPC port's TLS files: a certificate and its key together, and optionally a client CA (mutual TLS)."""
    files = {
        "grpc_tls_cert_file": read.get("GRPC_TLS_CERT_FILE", _readable_file, None),
        "grpc_tls_key_file": read.get("GRPC_TLS_KEY_FILE", _readable_file, None),
        "grpc_tls_client_ca_file": read.get("GRPC_TLS_CLIENT_CA_FILE", _readable_file, None),
    }
    if (files["grpc_tls_cert_file"] is None) != (files["grpc_tls_key_file"] is None):
        raise ConfigError("GRPC_TLS_CERT_FILE: set together with GRPC_TLS_KEY_FILE, or neither")
    if files["grpc_tls_client_ca_file"] is not None and files["grpc_tls_cert_file"] is None:
        raise ConfigError("GRPC_TLS_CLIENT_CA_FILE: mutual TLS needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE too")
    return files


def _database_url(read: _Reader) -> Secret | None:
    # Never echoed: a password holding an unescaped / ? # or @ spills into parts of the URL that masking
    # cannot tell from the rest.
    url = read.get("DATABASE_URL", _postgres_url, None, secret=True)
    parts = {
        name: read.raw(name)
        for name in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_SSLMODE", "DB_SSLROOTCERT")
    }
    if url is not None:
        given = [name for name, value in parts.items() if value is not None]
        if given:
            raise ConfigError(f"DATABASE_URL: set together with {', '.join(given)}; use one or the other")
        return Secret(url)
    if parts["DB_HOST"] is None:
        if any(value is not None for value in parts.values()):
            raise ConfigError("DB_HOST: required when any other DB_* variable is set")
        return None
    port = read.get("DB_PORT", _port, 5432)
    tls = {"sslmode": read.get("DB_SSLMODE", _choice(SSL_MODES), "prefer")}
    sslrootcert = read.get("DB_SSLROOTCERT", _readable_file, None)
    if sslrootcert is not None:
        if tls["sslmode"] not in TLS_REQUIRED:
            raise ConfigError(
                f"DB_SSLROOTCERT: a CA file is used with DB_SSLMODE verify-full, verify-ca or require, "
                f"not {tls['sslmode']}"
            )
        tls["sslrootcert"] = str(sslrootcert)
    user = quote(parts["DB_USER"] or "postgres", safe="")
    password = parts["DB_PASSWORD"]
    auth = f"{user}:{quote(password, safe='')}" if password else user
    host = parts["DB_HOST"]
    name = quote(parts["DB_NAME"] or "postgres", safe="")
    if host.startswith("/"):  # a Unix-socket directory, as in libpq: it goes in the query, not the authority
        query = urlencode({"host": host, "port": port, **tls})
        return Secret(f"postgresql://{auth}@/{name}?{query}")
    host = f"[{host}]" if ":" in host else host
    return Secret(f"postgresql://{auth}@{host}:{port}/{name}?{urlencode(tls)}")


def _secret(value: str) -> Secret:
    if len(value) < _MIN_SECRET_LENGTH:
        raise ValueError(f"expected at least {_MIN_SECRET_LENGTH} characters")
    return Secret(value)


def _postgres_url(value: str) -> str:
    """Checks what a connection would otherwise only find out later, leaving the server NOT_SERVING for ever:
    the scheme, every host's port (libpq's comma-separated host list included) and the query parameters."""
    parts = urlsplit(value)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("expected a postgresql:// URL")
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(",") if hosts else ():
        after_address = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, port = after_address.rpartition(":")
        if colon and port:  # "host:" means the default port, as in libpq
            _port_in_url(port)
    query = parse_qs(parts.query, keep_blank_values=True)
    for sslmode in query.get("sslmode", []):
        if sslmode not in SSL_MODES:
            raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}")
    for sslrootcert in query.get("sslrootcert", []):
        try:
            _readable_file(sslrootcert)
        except ValueError as exc:
            raise ValueError(f"sslrootcert: {exc}") from None
    for ports in query.get("port", []):
        for port in ports.split(","):
            _port_in_url(port)
    return value


def _port_in_url(value: str) -> None:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(
            "a port is not a number between 1 and 65535 (percent-encode any / ? # @ in the user or password)"
        )


def _redis_url(value: str) -> str:
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return value


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError("expected host:port")
    _port_or_zero(port)
    return value


def _port_or_zero(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("expected a port number between 0 and 65535")
    return port


def _port(value: str) -> int:
    port = _port_or_zero(value)
    if port == 0:
        raise ValueError("expected a port number between 1 and 65535")
    return port


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError("expected true, false, 1 or 0")


def _non_negative_int(value: str) -> int:
    return _non_negative(int)(value)


_WEIGHTED_TYPES = ("view", "like", "share", "bookmark")


def _weights(value: str) -> tuple[tuple[str, float], ...]:
    """``view=1,like=3,share=5,bookmark=4``: a finite, non-negative weight for each weighed interaction type."""
    weights: dict[str, float] = {}
    for part in value.split(","):
        name, _, number = part.partition("=")
        name = name.strip()
        if name not in _WEIGHTED_TYPES or name in weights:
            raise ValueError(f"expected each of {', '.join(_WEIGHTED_TYPES)} once, as name=weight")
        weight = float(number)
        if not 0 <= weight < float("inf"):
            raise ValueError(f"the weight of {name} must be a finite number of zero or more")
        weights[name] = weight
    if set(weights) != set(_WEIGHTED_TYPES):
        raise ValueError(f"expected a weight for each of {', '.join(_WEIGHTED_TYPES)}")
    return tuple((name, weights[name]) for name in _WEIGHTED_TYPES)


def _collection_name(value: str) -> str:
    if re.fullmatch(r"[a-z][a-z0-9_]{0,47}", value) is None:
        raise ValueError("expected 1 to 48 lowercase letters, digits and underscores, starting with a letter")
    return value


def _memory_size(value: str) -> str:
    """A PostgreSQL memory size with its unit, as SET takes it: 64MB, 2GB."""
    if re.fullmatch(r"[1-9][0-9]{0,6}(kB|MB|GB)", value) is None:
        raise ValueError("expected a whole number with kB, MB or GB, like 512MB")
    return value


def _between(low: int, high: int) -> Callable[[str], int]:
    def convert(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return number

    return convert


def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def convert(value: str) -> T:
        number = kind(value)
        if not number > 0:  # type: ignore[operator]
            raise ValueError("expected a number greater than zero")
        return number

    return convert


def _non_negative(kind: Callable[[str], T]) -> Callable[[str], T]:
    def convert(value: str) -> T:
        number = kind(value)
        if not number >= 0:  # type: ignore[operator]  # so written, NaN is refused too
            raise ValueError("expected a number of zero or more")
        return number

    return convert


def _at_least(minimum: int, kind: Callable[[str], int]) -> Callable[[str], int]:
    def convert(value: str) -> int:
        number = kind(value)
        if number < minimum:
            raise ValueError(f"expected at least {minimum}")
        return number

    return convert


def _choice(allowed: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def convert(value: str) -> str:
        normalized = value.upper() if upper else value
        if normalized not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return normalized

    return convert


def _enum(kind: type[CacheBackend]) -> Callable[[str], CacheBackend]:
    def convert(value: str) -> CacheBackend:
        try:
            return kind(value.lower())
        except ValueError:
            raise ValueError(f"expected one of {', '.join(member.value for member in kind)}") from None

    return convert
