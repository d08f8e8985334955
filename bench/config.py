"""The runner's knobs: parsed and checked once, then carried as one frozen BenchConfig."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.h2load import Concurrency
from bench.modes import MODES, NEAR, CacheMode, parse_modes

DEFAULT_CONCURRENCY = "4x1,4x25,16x4"
DEFAULT_CACHE_MODES = ",".join(mode.name for mode in MODES)


@dataclass(frozen=True)
class BenchConfig:
    duration_s: float
    """Target length of each measured run; turned into a request count by the warm-up."""
    warmup_s: float
    """Length of the unmeasured run per path and concurrency that sets that request count."""
    concurrency: tuple[Concurrency, ...]
    rounds: int
    users: int
    """How many users to seed (and read)."""
    sessions: int
    """How many sessions to seed for GetSession."""
    contents: int
    """How many content rows to seed for the content paths."""
    keys: int
    """Distinct requests per path, one h2load process each (at most one per connection)."""
    only: tuple[str, ...] | None
    cache_modes: tuple[CacheMode, ...]
    """The modes each cached path is measured in (the other paths run uncached only)."""
    staleness_rounds: int
    """Writes of the cross-replica staleness probe; 0 skips it (it also needs the near mode)."""
    overrides: dict[str, str]
    database_url: str | None
    server_env: dict[str, str]
    preflight: bool
    install: bool
    json_only: bool
    output: Path | None
    keep_workdir: bool
    workdir: Path | None
    """Parent of the run's work directory (default: the system temp directory)."""
    start_timeout_s: float

    @property
    def staleness(self) -> bool:
        """Whether the run ends with the staleness probe, which needs near replicas to probe."""
        return self.staleness_rounds > 0 and any(mode.name == NEAR for mode in self.cache_modes)


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes NAME=VALUE, got {value!r}")
        pairs[key] = rest
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the service's unary paths with h2load against a bare grpc.aio echo in the same run; "
        "print one JSON object on stdout and a table on stderr.",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="length of each measured run (default 10)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="unmeasured run per path and concurrency, which also sizes the measured runs (default 2)",
    )
    parser.add_argument(
        "--concurrency",
        default=DEFAULT_CONCURRENCY,
        metavar="CxM,...",
        help=f"h2load settings, connections x streams per connection (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds per path and concurrency (default 3)"
    )
    parser.add_argument(
        "--users", type=int, default=200, help="users to seed through CreateUser (default 200)"
    )
    parser.add_argument(
        "--sessions", type=int, default=1000, help="sessions to seed through CreateSession (default 1000)"
    )
    parser.add_argument(
        "--contents",
        type=int,
        default=10_000,
        help="content rows of a few KB to seed, written with COPY (default 10000; a rerun reuses them)",
    )
    parser.add_argument(
        "--keys",
        type=int,
        default=4,
        help="distinct requests per path, one h2load process each, at most one per connection (default 4)",
    )
    parser.add_argument(
        "--only", default=None, metavar="NAME,...", help="measure only these paths (the echo always runs)"
    )
    parser.add_argument(
        "--cache-modes",
        default=DEFAULT_CACHE_MODES,
        metavar="MODE,...",
        help=f"modes to measure the cached paths in, one service process each (default {DEFAULT_CACHE_MODES})",
    )
    parser.add_argument(
        "--staleness-rounds",
        type=int,
        default=200,
        metavar="N",
        help="writes of the cross-replica staleness probe, run when the near mode is on (default 200)",
    )
    parser.add_argument(
        "--no-staleness",
        dest="staleness",
        action="store_false",
        help="skip the cross-replica staleness probe",
    )
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="NAME=/pkg.Service/Method",
        help="point a path at another method, or add one that sends GetUser's requests (repeatable)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL") or None,
        help="PostgreSQL for the service (default $BENCH_DATABASE_URL; unset: the embedded PostgreSQL)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service (repeatable)",
    )
    parser.add_argument(
        "--no-preflight",
        dest="preflight",
        action="store_false",
        help="skip the nghttp grpc-status check (lets a failing method reach the count check)",
    )
    parser.add_argument(
        "--no-install", dest="install", action="store_false", help="never apt-get install nghttp2-client"
    )
    parser.add_argument(
        "--json-only", action="store_true", help="print only the JSON (no progress, no table)"
    )
    parser.add_argument(
        "--output", type=Path, default=None, metavar="FILE", help="also write the JSON to FILE"
    )
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep frames, h2load logs and server logs (always kept on failure)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="create the run's work directory under DIR (default: the system temp directory)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="how long the service may take to become SERVING (default 180)",
    )
    return parser


def parse_config(argv: Sequence[str] | None = None) -> BenchConfig:
    """Parse and check every argument at once, naming the flag that is wrong."""
    parser = build_parser()
    args = parser.parse_args(argv)
    problems: list[str] = []
    for flag, value, minimum in (
        ("--duration", args.duration, 0.1),
        ("--warmup", args.warmup, 0.1),
        ("--start-timeout", args.start_timeout, 1.0),
    ):
        if value < minimum:
            problems.append(f"{flag} must be at least {minimum:g} seconds, got {value:g}")
    for flag, value in (
        ("--rounds", args.rounds),
        ("--users", args.users),
        ("--sessions", args.sessions),
        ("--contents", args.contents),
        ("--keys", args.keys),
        ("--staleness-rounds", args.staleness_rounds),
    ):
        if value < 1:
            problems.append(f"{flag} must be at least 1, got {value}")
    cache_modes: tuple[CacheMode, ...] = ()
    try:
        cache_modes = parse_modes([name.strip() for name in args.cache_modes.split(",") if name.strip()])
    except ValueError as error:
        problems.append(f"--cache-modes: {error}")
    concurrency: list[Concurrency] = []
    try:
        concurrency = [Concurrency.parse(item) for item in args.concurrency.split(",") if item.strip()]
        if not concurrency:
            problems.append("--concurrency needs at least one setting, like 4x25")
    except ValueError as error:
        problems.append(f"--concurrency: {error}")
    try:
        overrides = _pairs(args.path, "--path")
        server_env = _pairs(args.server_env, "--server-env")
    except ValueError as error:
        problems.append(str(error))
        overrides, server_env = {}, {}
    if problems:
        parser.error("; ".join(problems))
    only = tuple(name.strip() for name in args.only.split(",") if name.strip()) if args.only else None
    return BenchConfig(
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=tuple(concurrency),
        rounds=args.rounds,
        users=args.users,
        sessions=args.sessions,
        contents=args.contents,
        keys=args.keys,
        only=only,
        cache_modes=cache_modes,
        staleness_rounds=args.staleness_rounds if args.staleness else 0,
        overrides=overrides,
        database_url=args.database_url,
        server_env=server_env,
        preflight=args.preflight,
        install=args.install,
        json_only=args.json_only,
        output=args.output,
        keep_workdir=args.keep_workdir,
        workdir=args.workdir,
        start_timeout_s=args.start_timeout,
    )
