"""Settings and helpers shared by the test modules."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from dataservice.v1 import user_service_pb2, user_service_pb2_grpc

from server.config import Settings

REPO = Path(__file__).resolve().parent.parent
MIGRATIONS = REPO / "migrations"


def settings_for(database_url: str, **overrides: str) -> Settings:
    """Settings for an in-process server: free port, fast health checks, cheap password hashing."""
    env = {
        "GRPC_ADDRESS": "127.0.0.1:0",
        "DATABASE_URL": database_url,
        "MIGRATIONS_DIR": str(MIGRATIONS),
        "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
        "DB_CONNECT_TIMEOUT_SECONDS": "2",
        "SHUTDOWN_GRACE_SECONDS": "1",
        "SHUTDOWN_DRAIN_SECONDS": "0",
        # Argon2id at test strength: the same code path, a fraction of the production cost.
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "LOG_LEVEL": "WARNING",
        **overrides,
    }
    return Settings.from_env(env)


def quiet_settings_for(database_url: str, **overrides: str) -> Settings:
    """``settings_for`` a server whose pool only the test's calls use: no cache (every read reaches PostgreSQL),
    no background passes, and no health check after the one at start (and the one its monitor begins with)."""
    quiet = {
        "CACHE_BACKEND": "none",
        "HEALTH_CHECK_INTERVAL_SECONDS": "3600",
        "CACHE_OUTBOX_SWEEP_SECONDS": "0",
        "SESSION_PURGE_INTERVAL_SECONDS": "0",
        "EMBEDDING_PURGE_INTERVAL_SECONDS": "0",
        "RECOMMENDATION_POPULARITY_REFRESH_SECONDS": "0",
    }
    return settings_for(database_url, **{**quiet, **overrides})


def unique_email(tag: str = "user") -> str:
    """An email no other test uses, so tests can share one database and run in any order."""
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def write_migration(directory: Path, version: int, name: str, up: str, down: str) -> None:
    (directory / f"{version:04d}_{name}.up.sql").write_text(up)
    (directory / f"{version:04d}_{name}.down.sql").write_text(down)


def migrations_plus(directory: Path, version: int, name: str, up: str, down: str) -> Path:
    """A copy of the project's migrations in ``directory`` with one more migration after them."""
    shutil.copytree(MIGRATIONS, directory)
    write_migration(directory, version, name, up, down)
    return directory


async def new_user(users: user_service_pb2_grpc.UserServiceStub, tag: str = "user") -> str:
    """Creates a user with a unique email through the API; returns its id."""
    request = user_service_pb2.CreateUserRequest(
        user=user_service_pb2.User(email=unique_email(tag), display_name="Test user"), password="correct horse battery"
    )
    return (await users.CreateUser(request)).user.id
