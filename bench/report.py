"""Turn measured rounds into the one JSON object and the short table.

Medians over rounds damp the noise of a shared two-core machine; ratios against the
echo and the reference GetUser of the same run and the same concurrency make runs on
different days comparable. A row in a cache mode is also compared with the same path's
uncached row, which says what the cache buys on this machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

MIB = 1024 * 1024
MEDIAN_FIELDS = (
    "rps", "p50_ms", "p99_ms", "server_cpu_us_per_call", "postgres_cpu_us_per_call", "redis_cpu_us_per_call"
)
COMPARED_FIELDS = ("rps", "p50_ms", "server_cpu_us_per_call")  # what vs_echo and vs_uncached compare


@dataclass(frozen=True)
class Row:
    """What the report needs of one measured row (a path, in a cache mode when it is cached)."""

    name: str
    method: str
    server: str
    items: int  # per call; above 1 adds items/s
    cache_mode: str
    uncached_row: str | None  # the row this one is compared with in vs_uncached; None for uncached rows


@dataclass(frozen=True)
class RoundResult:
    """One measured h2load run of one path."""

    path: str
    concurrency: str
    round: int
    requests: int  # asked of h2load
    succeeded: int  # h2load's count
    failed: int
    errored: int
    timeout: int
    server_ok: int  # the server's OK counter, after minus before
    elapsed_s: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_us_per_call: float | None
    postgres_cpu_us_per_call: float | None
    redis_cpu_us_per_call: float | None  # the run's redis-server, for a row in a Redis mode; else None
    server_rss_mib: float

    def as_json(self) -> dict[str, Any]:
        record = asdict(self)
        del record["path"], record["concurrency"]
        return {key: round(value, 3) if isinstance(value, float) else value for key, value in record.items()}


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(statistics.median(present), 3) if present else None


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return round(value / baseline, 3)


def medians(rounds: Sequence[RoundResult]) -> dict[str, float | None]:
    return {name: _median(getattr(result, name) for result in rounds) for name in MEDIAN_FIELDS}


def _ratios(middle: dict[str, float | None], base: dict[str, float | None]) -> dict[str, float | None]:
    return {name: _ratio(middle[name], base[name]) for name in COMPARED_FIELDS}


def build_results(
    rounds: Sequence[RoundResult],
    concurrency: Sequence[tuple[str, int, int]],
    paths: Sequence[Row],
    baseline: str,
    reference: str,
) -> list[dict[str, Any]]:
    """Per concurrency: per row its rounds, medians, and ratios to the medians of the baseline (the echo),
    of the reference (minimal GetUser) and, for a row in a cache mode, of the same path uncached; for
    batch paths also items/s.

    concurrency holds (label, connections, streams).
    """
    results: list[dict[str, Any]] = []
    for label, connections, streams in concurrency:
        by_path: dict[str, Any] = {}

        def medians_of(name: str) -> dict[str, float | None]:
            return medians([result for result in rounds if result.concurrency == label and result.path == name])

        base, ref = medians_of(baseline), medians_of(reference)
        for row in paths:
            mine = [result for result in rounds if result.concurrency == label and result.path == row.name]
            if not mine:
                continue
            middle = medians(mine)
            entry: dict[str, Any] = {
                "method": row.method,
                "server": row.server,
                "cache_mode": row.cache_mode,
                "rounds": [result.as_json() for result in mine],
                "median": middle,
                "vs_echo": _ratios(middle, base),
                "vs_reference": {
                    "rps": _ratio(middle["rps"], ref["rps"]),
                    "server_cpu_us_per_call": _ratio(
                        middle["server_cpu_us_per_call"], ref["server_cpu_us_per_call"]
                    ),
                },
            }
            if row.uncached_row is not None:
                entry["vs_uncached"] = _ratios(middle, medians_of(row.uncached_row))
            if row.items > 1:  # a batch: per item, against the reference's one item per call
                items_per_s = None if middle["rps"] is None else round(middle["rps"] * row.items, 1)
                entry["items_per_call"] = row.items
                entry["items_per_s"] = items_per_s
                entry["vs_reference"]["items_per_s"] = _ratio(items_per_s, ref["rps"])
            by_path[row.name] = entry
        results.append(
            {"concurrency": label, "connections": connections, "streams": streams, "paths": by_path}
        )
    return results


def cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


NAME_WIDTH = 30  # fits "BatchGetContents[redis-cold]"


def table(results: Sequence[dict[str, Any]]) -> str:
    """A fixed-width summary of build_results' output, one block per concurrency."""
    lines: list[str] = []
    header = (
        f"{'path':<{NAME_WIDTH}}{'RPC/s per round':<24}{'median':>8}{'×echo':>7}{'×ref':>7}{'×unc':>7}"
        f"{'items/s':>9}{'×ref':>7}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'CPU µs/call':>12}{'×echo':>7}{'PG µs/call':>11}{'Redis µs/call':>14}"
    )
    for block in results:
        lines.append(
            f"concurrency {block['concurrency']} ({block['connections']} connections × {block['streams']} streams)"
        )
        lines.append(header)
        for name, entry in block["paths"].items():
            middle, ratio, to_reference = entry["median"], entry["vs_echo"], entry["vs_reference"]
            per_round = " ".join(f"{result['rps']:.0f}" for result in entry["rounds"])
            lines.append(
                f"{name:<{NAME_WIDTH}}{per_round:<24}{cell(middle['rps'], '.0f'):>8}{cell(ratio['rps'], '.2f'):>7}"
                f"{cell(to_reference['rps'], '.2f'):>7}{cell(entry.get('vs_uncached', {}).get('rps'), '.2f'):>7}"
                f"{cell(entry.get('items_per_s'), '.0f'):>9}"
                f"{cell(to_reference.get('items_per_s'), '.2f'):>7}"
                f"{cell(middle['p50_ms'], '.2f'):>8}{cell(middle['p99_ms'], '.2f'):>8}"
                f"{cell(middle['server_cpu_us_per_call'], '.0f'):>12}{cell(ratio['server_cpu_us_per_call'], '.2f'):>7}"
                f"{cell(middle['postgres_cpu_us_per_call'], '.0f'):>11}"
                f"{cell(middle['redis_cpu_us_per_call'], '.0f'):>14}"
            )
        lines.append("")
    return "\n".join(lines)
