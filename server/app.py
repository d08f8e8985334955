"""The composition root: builds the pool, stores, servicers, health and reflection, and owns start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time

import asyncpg
import grpc
from dataservice.v1 import (
    content_service_pb2,
    embedding_service_pb2,
    recommendation_service_pb2,
    session_service_pb2,
    user_service_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry

from server.api.content import ContentServicer
from server.api.embeddings import EmbeddingServicer
from server.api.health import NOT_SERVING, SERVING, HealthServicer
from server.api.paging import PageTokens
from server.api.sessions import SessionServicer
from server.api.recommendations import RecommendationServicer
from server.api.users import UserServicer
from server.cache.base import Cache
from server.cache.content import Contents
from server.cache.embeddings import Embeddings
from server.cache.factory import create_cache
from server.cache.metrics import CacheMetrics
from server.cache.outbox import OutboxSweep
from server.cache.readthrough import ReadThrough
from server.cache.recommendations import FeedSettings, Recommendations
from server.cache.redis import Mode
from server.cache.sessions import Sessions
from server.cache.users import Users
from server.config import DEVELOPMENT_PAGE_TOKEN_SECRET, Settings
from server.db import migrate
from server.db.database import Database
from server.db.embedded import start_embedded_postgres
from server.db.pgvector import VectorSupport
from server.db.pool import create_pool, warm_up
from server.domain.embeddings import SearchParams
from server.domain.recommendations import InteractionType
from server.embeddings_purge import EmbeddingPurge
from server.health import HealthMonitor
from server.interceptors import RpcPolicy
from server.login_limit import LoginLimiter, LoginLimits
from server.metrics import MetricsEndpoint, PoolMetrics, QueryMetrics, RpcMetrics, register_build_info
from server.outage import OutageLog
from server.passwords import Passwords
from server.popularity import PopularityRefresh
from server.secret import mask_url
from server.tasks import cancel
from server.tracing import Tracing, start_tracing
from server.sessions_purge import SessionPurge

log = logging.getLogger(__name__)

_USER_SERVICE = user_service_pb2.DESCRIPTOR.services_by_name["UserService"]
_SESSION_SERVICE = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"]
_CONTENT_SERVICE = content_service_pb2.DESCRIPTOR.services_by_name["ContentService"]
_EMBEDDING_SERVICE = embedding_service_pb2.DESCRIPTOR.services_by_name["EmbeddingService"]
_RECOMMENDATION_SERVICE = recommendation_service_pb2.DESCRIPTOR.services_by_name["RecommendationService"]
SERVICE_NAMES = [
    _USER_SERVICE.full_name,
    _SESSION_SERVICE.full_name,
    _CONTENT_SERVICE.full_name,
    _EMBEDDING_SERVICE.full_name,
    _RECOMMENDATION_SERVICE.full_name,
]
# The health of a dependency rather than a service: SERVING while the cache is in use, NOT_SERVING while Redis
# fails and reads go to PostgreSQL. "" and the services stay SERVING then: the database is the truth.
CACHE_HEALTH_NAME = "dataservice.cache"
# The services that need pgvector: NOT_SERVING without it, while "" and the others serve.
VECTOR_SERVICE_NAMES = [_EMBEDDING_SERVICE.full_name]
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the protos promise 16 MiB for embedding batches


def transport_options(settings: Settings) -> list[tuple[str, int]]:
    """Keepalive and connection age of the gRPC port. Clients may ping without calls, but not more often than
    GRPC_MIN_CLIENT_PING_INTERVAL_SECONDS: the third ping too early ends the connection (GOAWAY
    ``too_many_pings``). The shipped client's pings (dataservice.channel) keep within it."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    options = [
        ("grpc.keepalive_time_ms", ms(settings.grpc_keepalive_time_seconds)),
        ("grpc.keepalive_timeout_ms", ms(settings.grpc_keepalive_timeout_seconds)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(settings.grpc_min_client_ping_interval_seconds)),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    if settings.grpc_max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", ms(settings.grpc_max_connection_age_seconds)),
            ("grpc.max_connection_age_grace_ms", ms(settings.grpc_max_connection_age_grace_seconds)),
        ]
    return options


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials of the gRPC port, requiring client certificates when a client CA is set; None for
    plaintext. The files were found readable when the settings were read; they are read now, at start."""
    if settings.grpc_tls_cert_file is None or settings.grpc_tls_key_file is None:
        return None
    client_ca = settings.grpc_tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(settings.grpc_tls_key_file.read_bytes(), settings.grpc_tls_cert_file.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca is not None else None,
        require_client_auth=client_ca is not None,
    )


class StartupError(RuntimeError):
    """The server cannot start as configured; the message names the setting."""


class AppState(enum.Enum):
    CREATED = "created"  # built, nothing started
    RUNNING = "running"  # serving RPCs (health may still say NOT_SERVING while the database is away)
    STOPPED = "stopped"  # stopped for good; an App is never restarted


class App:
    """One running dataservice: ``await start()``, later ``await stop()``."""

    def __init__(
        self,
        settings: Settings,
        span_exporter: SpanExporter | None = None,
        *,
        reuse_port: bool = False,
        metrics_host: str = "0.0.0.0",
    ) -> None:
        """``span_exporter`` turns tracing on with it (tests); else OTEL_EXPORTER_OTLP_ENDPOINT does.
        ``reuse_port`` shares the gRPC port with the other workers of a replica (server.workers), whose
        supervisor reads this process's metrics on ``metrics_host``."""
        self.settings = settings
        self._reuse_port = reuse_port
        self._metrics_host = metrics_host
        self._span_exporter = span_exporter
        self._tracing: Tracing | None = None
        self.metrics_registry = CollectorRegistry()
        self._state = AppState.CREATED
        self._server: grpc.aio.Server | None = None
        self._pool: asyncpg.Pool | None = None
        self._cache: Cache | None = None
        self._login_limiter: LoginLimiter | None = None
        self._policy: RpcPolicy | None = None
        self._database_outage = OutageLog(logging.getLogger("server.rpc"), "database")
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._purge_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._embedding_purge_task: asyncio.Task[None] | None = None
        self._popularity_task: asyncio.Task[None] | None = None
        self.vectors = VectorSupport()
        self.cache_metrics = CacheMetrics(self.metrics_registry)
        # The sweep of recorded cache invalidations, built by start() also when its task is off.
        self.outbox_sweep: OutboxSweep | None = None
        # The purge of ended sessions, built by start() also when its task is off: run_once() is one pass.
        self.session_purge: SessionPurge | None = None
        # The purge of expired embeddings, likewise.
        self.embedding_purge: EmbeddingPurge | None = None
        # The refresh of content popularity, likewise.
        self.popularity_refresh: PopularityRefresh | None = None
        self.health = HealthServicer()
        self._hurry = asyncio.Event()
        self.port = 0
        self.dsn = ""

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on, once started (METRICS_PORT, or the one taken for port 0)."""
        return self._metrics_endpoint.port if self._metrics_endpoint is not None else None

    @property
    def pool(self) -> asyncpg.Pool:
        """The database pool, once started: for tests that look at what a pooled connection carries."""
        assert self._pool is not None, "the App has not started"
        return self._pool

    @property
    def state(self) -> AppState:
        return self._state

    async def start(self) -> int:
        """Starts serving and returns the bound port. The database may be down: health says so until it is up.
        A refusal no retry can fix (server.db.connect_errors) raises StartupError, naming the cause."""
        if self._state is not AppState.CREATED:
            raise RuntimeError(f"cannot start an App that is {self._state.value}; build a new one")
        self._state = AppState.RUNNING
        settings = self.settings
        if settings.database_url is None:
            self.dsn = await asyncio.to_thread(start_embedded_postgres, settings.embedded_pg_dir)
        else:
            self.dsn = settings.database_url.reveal()
        migrations = migrate.load_migrations(settings.migrations_dir)
        self._pool = await create_pool(self.dsn, settings)
        self._cache = create_cache(settings, self.cache_metrics, self._cache_mode_changed)
        self._login_limiter = LoginLimiter(
            LoginLimits(
                per_email=settings.login_failures_per_email,
                per_ip=settings.login_failures_per_ip,
                window_seconds=settings.login_failure_window_seconds,
            ),
            self.metrics_registry,
            redis_url=settings.redis_url.reveal() if settings.redis_url is not None else None,
            timeout_seconds=settings.redis_timeout_seconds,
        )
        for name in ["", *SERVICE_NAMES]:  # nothing is checked yet
            self.health.set(name, NOT_SERVING)
        self.health.set(CACHE_HEALTH_NAME, SERVING)

        self._tracing = start_tracing(settings, self._span_exporter)
        self._server = await self._build_server()
        try:
            credentials = server_credentials(settings)
            if credentials is None:
                self.port = self._server.add_insecure_port(settings.grpc_address)
            else:
                self.port = self._server.add_secure_port(settings.grpc_address, credentials)
        except RuntimeError:
            raise StartupError(f"GRPC_ADDRESS: cannot bind {settings.grpc_address} (in use, or not allowed)") from None
        await self._server.start()

        monitor = HealthMonitor(
            self.health,
            SERVICE_NAMES,
            self._pool,
            dsn=self.dsn,
            migrator=migrate.Migrator(
                self.dsn,
                migrations,
                connect_timeout=settings.db_connect_timeout_seconds,
                statement_timeout=settings.migration_timeout_seconds,
            ),
            auto_migrate=settings.migrate_on_start,
            interval_seconds=settings.health_check_interval_seconds,
            check_timeout_seconds=settings.db_connect_timeout_seconds + 2.0,
            migration_timeout_seconds=settings.migration_timeout_seconds,
            outage=self._database_outage,
            vectors=self.vectors,
            vector_service_names=VECTOR_SERVICE_NAMES,
        )
        if await monitor.check_once():  # SERVING at once when the database is already there
            await warm_up(self._pool, settings.db_pool_min_size, settings.db_connect_timeout_seconds)
        elif monitor.refusal is not None:  # no retry can help: stop now and say why, rather than wait in vain
            await self.stop(grace_seconds=0, drain_seconds=0)  # nothing was served: nothing to drain
            raise StartupError(monitor.refusal)
        self._monitor_task = asyncio.create_task(monitor.run(), name="health-monitor")
        if settings.session_purge_interval_seconds > 0:
            assert self.session_purge is not None
            self._purge_task = asyncio.create_task(
                self.session_purge.run(settings.session_purge_interval_seconds), name="session-purge"
            )
        if settings.cache_outbox_sweep_seconds > 0:
            assert self.outbox_sweep is not None
            self._sweep_task = asyncio.create_task(
                self.outbox_sweep.run(settings.cache_outbox_sweep_seconds), name="cache-outbox-sweep"
            )
        if settings.embedding_purge_interval_seconds > 0:
            assert self.embedding_purge is not None
            self._embedding_purge_task = asyncio.create_task(
                self.embedding_purge.run(settings.embedding_purge_interval_seconds), name="embedding-purge"
            )
        if settings.recommendation_popularity_refresh_seconds > 0:
            assert self.popularity_refresh is not None
            self._popularity_task = asyncio.create_task(
                self.popularity_refresh.run(settings.recommendation_popularity_refresh_seconds),
                name="popularity-refresh",
            )
        if settings.metrics_port is not None:
            try:
                self._metrics_endpoint = MetricsEndpoint(
                    self.metrics_registry, settings.metrics_port, self._metrics_host
                )
            except OSError as exc:
                raise StartupError(f"METRICS_PORT: cannot serve metrics on {settings.metrics_port} ({exc})") from None
        if settings.page_token_secret.reveal() == DEVELOPMENT_PAGE_TOKEN_SECRET:
            log.warning("page tokens use the development secret; set PAGE_TOKEN_SECRET, the same on every replica")
        log.info(
            "serving",
            extra={
                "port": self.port,
                "database": mask_url(self.dsn),
                "cache": settings.cache_backend.value,
                "serving": monitor.serving,
            },
        )
        return self.port

    def _cache_mode_changed(self, mode: Mode) -> None:
        self.health.set(CACHE_HEALTH_NAME, SERVING if mode is Mode.IN_USE else NOT_SERVING)

    def _reads(self, ttl_seconds: float) -> ReadThrough:
        assert self._cache is not None
        return ReadThrough(
            self._cache,
            self.cache_metrics,
            ttl_seconds=ttl_seconds,
            negative_ttl_seconds=self.settings.cache_negative_ttl_seconds,
        )

    async def _build_server(self) -> grpc.aio.Server:
        """The gRPC server with every service registered: implemented, planned, health and reflection."""
        settings = self.settings
        assert self._pool is not None and self._cache is not None and self._login_limiter is not None
        queries = QueryMetrics(self.metrics_registry, settings.db_slow_query_seconds)
        PoolMetrics(self.metrics_registry, self._pool, queries)
        register_build_info(self.metrics_registry)
        db = Database(
            self._pool,
            settings.db_command_timeout_seconds,
            queries,
            acquire_timeout_seconds=settings.db_pool_acquire_timeout_seconds,
        )
        users = Users(db, self._reads(settings.cache_user_ttl_seconds))
        sessions = Sessions(db, self._reads(settings.cache_session_ttl_seconds))
        contents = Contents(db, self._reads(settings.cache_content_ttl_seconds))
        self.outbox_sweep = OutboxSweep(
            db,
            self._cache,
            self.cache_metrics,
            grace_seconds=settings.cache_outbox_grace_seconds,
            outage=self._database_outage,
        )
        self._cache.set_recovery(self.outbox_sweep.recover)
        self.session_purge = SessionPurge(db, batch_size=settings.session_purge_batch_size, outage=self._database_outage)
        self.embedding_purge = EmbeddingPurge(
            db, self.vectors, batch_size=settings.embedding_purge_batch_size, outage=self._database_outage
        )
        self.popularity_refresh = PopularityRefresh(db, outage=self._database_outage)
        passwords = await asyncio.to_thread(  # hashes its decoy password: CPU work, off the loop
            Passwords, time_cost=settings.password_hash_time_cost, memory_cost_kib=settings.password_hash_memory_kib
        )
        policy = self._policy = RpcPolicy(
            RpcMetrics(self.metrics_registry), settings.db_command_timeout_seconds, self._database_outage
        )

        server = grpc.aio.server(
            interceptors=[self._tracing.interceptor] if self._tracing is not None else None,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # grpc turns SO_REUSEPORT on by default: a second server on a taken port would then start
                # "fine" and take half the connections (with its own in-process cache, serving stale reads).
                # Only the workers of one replica share their port, on purpose.
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
                *transport_options(settings),
            ],
        )
        page_tokens = PageTokens(settings.page_token_secret.reveal().encode())
        policy.register(server, UserServicer(users, passwords, page_tokens, self._login_limiter), _USER_SERVICE)
        policy.register(server, SessionServicer(sessions, page_tokens), _SESSION_SERVICE)
        embeddings = Embeddings(db, self.vectors)
        default_search = SearchParams(
            exact=False, ef_search=settings.embedding_ef_search, scan_budget=settings.embedding_scan_budget
        )
        policy.register(server, ContentServicer(contents, page_tokens, embeddings, default_search), _CONTENT_SERVICE)
        embedding_servicer = EmbeddingServicer(
            embeddings,
            page_tokens,
            ef_search=settings.embedding_ef_search,
            scan_budget=settings.embedding_scan_budget,
            index_build_memory=settings.embedding_index_build_memory,
        )
        policy.register(
            server,
            embedding_servicer,
            _EMBEDDING_SERVICE,
            timeouts={"ImportEmbeddings": settings.embedding_import_timeout_seconds},
        )
        recommendations = Recommendations(
            db,
            self._reads(settings.cache_recommendation_ttl_seconds),
            embeddings,
            self.vectors,
            FeedSettings(
                collection=settings.recommendation_collection,
                weights={InteractionType(name): weight for name, weight in settings.recommendation_weights},
                size=settings.recommendation_feed_size,
                recent_interactions=settings.recommendation_recent_interactions,
                warm_interactions=settings.recommendation_warm_interactions,
                ef_search=settings.embedding_ef_search,
                scan_budget=settings.embedding_scan_budget,
            ),
        )
        policy.register(server, RecommendationServicer(recommendations, page_tokens), _RECOMMENDATION_SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server,
        )
        return server

    def hurry(self) -> None:
        """Cuts a running shutdown drain short (a second SIGTERM or Ctrl-C); the grace still applies."""
        self._hurry.set()

    async def stop(self, grace_seconds: float | None = None, drain_seconds: float | None = None) -> None:
        """Stops serving without dropping calls, in the order load balancers need:

        1. every health status turns NOT_SERVING, and Watch streams say so at once;
        2. for the drain, the server keeps serving, so that probes and balancers move traffic away first;
        3. Watch streams end and the server refuses new calls (UNAVAILABLE, which clients retry elsewhere) until
           the calls in flight have finished and arrivals have stopped, for at most half the grace; then it
           stops, and what is still in flight gets the rest of the grace. Refusing first answers the calls grpc
           has received but not yet handed over (the stop would cancel them); keeping half the grace for the
           stop means a caller that never stops sending cannot use it all up and have calls cancelled;
        4. the cache, the metrics endpoint and the pool close.

        Idempotent, and safe before ``start``.
        """
        if self._state is not AppState.RUNNING:
            self._state = AppState.STOPPED
            return
        self._state = AppState.STOPPED
        grace = self.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        drain = self.settings.shutdown_drain_seconds if drain_seconds is None else drain_seconds
        if not self.port:
            drain = 0.0  # it never bound its port: nobody to drain
        log.info("stopping", extra={"drain_seconds": drain, "grace_seconds": grace})
        self.health.enter_graceful_shutdown()
        if drain > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), drain)
        for task in (
            self._monitor_task,
            self._purge_task,
            self._sweep_task,
            self._embedding_purge_task,
            self._popularity_task,
        ):
            if task is not None:
                await cancel(task)
        self.health.end_watches()
        if self._server is not None:
            assert self._policy is not None
            refusing_since = time.monotonic()
            refused = await self._policy.refuse_new_calls(within_seconds=grace / 2)  # half: see the docstring
            log.info("stopped accepting calls", extra={"refused_calls": refused})
            await self._server.stop(max(0.0, grace - (time.monotonic() - refusing_since)))
        if self._cache is not None:
            await self._cache.aclose()
        if self._login_limiter is not None:
            await self._login_limiter.aclose()
        if self._metrics_endpoint is not None:
            await asyncio.to_thread(self._metrics_endpoint.close)
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout=max(grace, 1.0))
            except TimeoutError:
                log.warning("pool did not close in time; terminating its connections")
                self._pool.terminate()
        if self._tracing is not None:
            await asyncio.to_thread(self._tracing.close)  # exports the last spans: network, off the loop
        log.info("stopped")
