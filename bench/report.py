"""Turn measured rounds into the one JSON object and the short table.

Medians over rounds damp the noise of a shared two-core machine; ratios against the
echo and the reference GetUser of the same run and the same concurrency make runs on
different days comparable.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

MIB = 1024 * 1024
MEDIAN_FIELDS = ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_call", "postgres_cpu_us_per_call")


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


def build_results(
    rounds: Sequence[RoundResult],
    concurrency: Sequence[tuple[str, int, int]],
    paths: Sequence[tuple[str, str, str, int]],
    baseline: str,
    reference: str,
) -> list[dict[str, Any]]:
    """Per concurrency: per path its rounds, medians, and ratios to the medians of the baseline (the echo)
    and of the reference (minimal GetUser); for batch paths also items/s.

    concurrency holds (label, connections, streams); paths holds (name, method, server, items per call).
    """
    results: list[dict[str, Any]] = []
    for label, connections, streams in concurrency:
        by_path: dict[str, Any] = {}
        base = medians(
            [result for result in rounds if result.concurrency == label and result.path == baseline]
        )
        ref = medians([result for result in rounds if result.concurrency == label and result.path == reference])
        for name, method, server, items in paths:
            mine = [result for result in rounds if result.concurrency == label and result.path == name]
            if not mine:
                continue
            middle = medians(mine)
            by_path[name] = {
                "method": method,
                "server": server,
                "rounds": [result.as_json() for result in mine],
                "median": middle,
                "vs_echo": {
                    "rps": _ratio(middle["rps"], base["rps"]),
                    "p50_ms": _ratio(middle["p50_ms"], base["p50_ms"]),
                    "server_cpu_us_per_call": _ratio(
                        middle["server_cpu_us_per_call"], base["server_cpu_us_per_call"]
                    ),
                },
                "vs_reference": {
                    "rps": _ratio(middle["rps"], ref["rps"]),
                    "server_cpu_us_per_call": _ratio(
                        middle["server_cpu_us_per_call"], ref["server_cpu_us_per_call"]
                    ),
                },
            }
            if items > 1:  # a batch: per item, against the reference's one item per call
                items_per_s = None if middle["rps"] is None else round(middle["rps"] * items, 1)
                by_path[name]["items_per_call"] = items
                by_path[name]["items_per_s"] = items_per_s
                by_path[name]["vs_reference"]["items_per_s"] = _ratio(items_per_s, ref["rps"])
        results.append(
            {"concurrency": label, "connections": connections, "streams": streams, "paths": by_path}
        )
    return results


def cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: Sequence[dict[str, Any]]) -> str:
    """A fixed-width summary of build_results' output, one block per concurrency."""
    lines: list[str] = []
    header = (
        f"{'path':<18}{'RPC/s per round':<24}{'median':>8}{'×echo':>7}{'×ref':>7}{'items/s':>9}{'×ref':>7}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'CPU µs/call':>12}{'×echo':>7}{'PG µs/call':>11}"
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
                f"{name:<18}{per_round:<24}{cell(middle['rps'], '.0f'):>8}{cell(ratio['rps'], '.2f'):>7}"
                f"{cell(to_reference['rps'], '.2f'):>7}{cell(entry.get('items_per_s'), '.0f'):>9}"
                f"{cell(to_reference.get('items_per_s'), '.2f'):>7}"
                f"{cell(middle['p50_ms'], '.2f'):>8}{cell(middle['p99_ms'], '.2f'):>8}"
                f"{cell(middle['server_cpu_us_per_call'], '.0f'):>12}{cell(ratio['server_cpu_us_per_call'], '.2f'):>7}"
                f"{cell(middle['postgres_cpu_us_per_call'], '.0f'):>11}"
            )
        lines.append("")
    return "\n".join(lines)
