"""Command line: ``python -m server`` serves; ``python -m server migrate up|down|status|to N|new NAME``;
``python -m server seed --demo`` loads demo data into a running server; ``python -m server check`` diagnoses
the configuration and the dependencies, and exits 1 when something needs fixing."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace

import grpc
import uvloop

from server.app import App, StartupError
from server.config import ConfigError, Settings
from server.db import migrate
from server.db.embedded import EmbeddedUnavailable, start_embedded_postgres
from server import check, native_stderr, seed
from server.logs import configure_logging
from server.workers import Supervisor, WorkerLink

log = logging.getLogger("server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve gRPC (the default)")
    migrate_parser = commands.add_parser("migrate", help="move the database schema")
    actions = migrate_parser.add_subparsers(dest="action", required=True)
    actions.add_parser("up", help="apply every pending migration")
    actions.add_parser("down", help="revert the latest applied migration")
    actions.add_parser("status", help="list migrations and their state")
    to = actions.add_parser("to", help="apply or revert until VERSION is the latest applied")
    to.add_argument("version", type=int)
    new = actions.add_parser("new", help="create an empty NNNN_NAME.up.sql/.down.sql pair")
    new.add_argument("name")
    worker_parser = commands.add_parser(
        "worker", help="one serving process of WORKERS > 1, started by the supervisor (server/workers.py)"
    )
    worker_parser.add_argument("--index", type=int, required=True)
    worker_parser.add_argument("--link-fd", type=int, required=True)
    worker_parser.add_argument("--metrics", action="store_true", help="serve metrics on a loopback port")
    commands.add_parser("check", help="diagnose configuration, PostgreSQL, migrations, pgvector and Redis")
    seed_parser = commands.add_parser("seed", help="load data into a running server through its API")
    seed_parser.add_argument("--demo", action="store_true", required=True, help="the demo data set (server/seed.py)")
    seed_parser.add_argument(
        "--target", help="host:port of the server (default: 127.0.0.1 and the port of GRPC_ADDRESS)"
    )
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    native_stderr.route_to_log(settings.log_level)
    configure_logging(settings.log_level, {"worker": args.index} if args.command == "worker" else None)
    try:
        if args.command == "migrate":
            return uvloop.run(_migrate(settings, args))
        if args.command == "check":
            return uvloop.run(check.run(settings))
        if args.command == "seed":
            target = args.target or f"127.0.0.1:{settings.grpc_address.rsplit(':', 1)[1]}"
            return uvloop.run(_seed(target))
        if args.command == "worker":
            worker_settings = replace(settings, metrics_port=0 if args.metrics else None)
            return uvloop.run(_serve_worker(worker_settings, args.link_fd))
        if settings.workers > 1:
            return uvloop.run(Supervisor(settings).run())
        return uvloop.run(_serve(App(settings), asyncio.Event()))
    except migrate.MigrationError as exc:
        native_stderr.finish()  # grpc's own lines first: the error is the last line
        print(f"migration error: {exc}", file=sys.stderr)
        return 1
    except (EmbeddedUnavailable, StartupError) as exc:
        native_stderr.finish()
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


async def _serve(app: App, stop_requested: asyncio.Event, on_serving: Callable[[App], None] | None = None) -> int:
    """Serves until SIGTERM or SIGINT (or ``stop_requested``); a second signal cuts the drain short."""

    def on_signal() -> None:
        if stop_requested.is_set():
            app.hurry()  # a second signal: no more waiting for balancers
        stop_requested.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    try:
        await app.start()
        if on_serving is not None:
            on_serving(app)
        await stop_requested.wait()
    finally:
        await app.stop()
    return 0


async def _serve_worker(settings: Settings, link_fd: int) -> int:
    """One of WORKERS processes: shares the port, reports its metrics port, stops with its supervisor."""
    link = WorkerLink(link_fd)
    stop_requested = asyncio.Event()
    link.on_supervisor_gone(stop_requested.set)
    try:
        app = App(settings, reuse_port=True, metrics_host="127.0.0.1")
        return await _serve(app, stop_requested, lambda app: link.report_serving(app.metrics_port))
    finally:
        link.close()


async def _seed(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            loaded = await seed.load_demo(channel)
        except grpc.aio.AioRpcError as error:
            print(f"seed failed: {error.code().name}: {error.details()} (is the server running at {target}?)",
                  file=sys.stderr)
            return 1
    print(seed.summary(loaded, target))
    return 0


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "new":
        up, down = migrate.new_migration(settings.migrations_dir, args.name)
        print(f"created {up} and {down}")
        return 0
    if settings.database_url is None:
        dsn = await asyncio.to_thread(start_embedded_postgres, settings.embedded_pg_dir)
    else:
        dsn = settings.database_url.reveal()
    migrator = migrate.Migrator(
        dsn,
        migrate.load_migrations(settings.migrations_dir),
        connect_timeout=settings.db_connect_timeout_seconds,
        statement_timeout=settings.migration_timeout_seconds,
    )
    if args.action == "status":
        for line in await migrator.status():
            applied = line.applied_at.isoformat() if line.applied_at else ""
            print(f"{line.version:04d}  {line.name:<32} {line.state:<8} {applied}")
        return 0
    if args.action == "up":
        changed = await migrator.up()
    elif args.action == "down":
        changed = await migrator.down()
    else:
        changed = await migrator.to(args.version)
    for migration in changed:
        print(f"{args.action}: {migration.label}")
    if not changed:
        print("nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
