"""The server's own count of OK answers, scraped from its Prometheus endpoint.

h2load counts HTTP 200 as success, but a failed gRPC call is also an HTTP 200 (the
grpc-status travels in the trailers). The server's ``grpc_server_handled_total``
counter with ``grpc_code="OK"``, diffed around a run, is what proves h2load measured
successful calls.
"""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

HANDLED = "grpc_server_handled_total"


def split_method(method_path: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` → ``("pkg.Service", "Method")``, the metric's label values."""
    parts = method_path.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"method path must look like /package.Service/Method, got {method_path!r}")
    return parts[0], parts[1]


def _scrape(port: int, timeout_s: float) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as response:
        body: bytes = response.read()
    return body.decode("utf-8")


def parse_handled_count(exposition: str, method_path: str, code: str | None = "OK") -> int:
    """Answers of one method with grpc_code ``code`` (any code when None) in a text
    exposition; 0 when the series does not exist yet."""
    service, method = split_method(method_path)
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == HANDLED
                and labels.get("grpc_service") == service
                and labels.get("grpc_method") == method
                and (code is None or labels.get("grpc_code") == code)
            ):
                total += sample.value
    return int(total)


async def scrape(port: int, timeout_s: float = 10.0) -> str:
    """The text exposition of the server's metrics at 127.0.0.1:port."""
    return await asyncio.to_thread(_scrape, port, timeout_s)


async def handled_count(port: int, method_path: str, code: str | None = "OK", timeout_s: float = 10.0) -> int:
    """Scrape the server at 127.0.0.1:port and return the count of method_path's answers with ``code``."""
    return parse_handled_count(await scrape(port, timeout_s), method_path, code)


async def settle(port: int, method_path: str, quiet_s: float = 0.25) -> None:
    """Wait until the server has stopped answering what a ``-D`` load left in flight.

    h2load's ``-D`` abandons the requests in flight when time is up, and the server
    still works them off: on a slow path (a search, 100 in flight) that is seconds of
    work, which would slow the next run, add to its CPU, and add OK answers h2load
    never saw to a count check. Settled means no answer, of any code, for quiet_s.
    """
    answered = await handled_count(port, method_path, code=None)
    while True:
        await asyncio.sleep(quiet_s)
        now = await handled_count(port, method_path, code=None)
        if now == answered:
            return
        answered = now


Buckets = list[tuple[float, float]]
"""A histogram's cumulative buckets: (upper bound, observations at most that), by bound, +Inf last."""


def histogram_buckets(exposition: str, name: str) -> Buckets | None:
    """The buckets of histogram ``name``, summed over its label sets; None when it is not exposed."""
    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                counts[bound] = counts.get(bound, 0.0) + sample.value
    return sorted(counts.items()) or None


def bucket_increase(before: Buckets, after: Buckets) -> Buckets:
    """What was observed between two scrapes of the same histogram."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def histogram_quantile(fraction: float, buckets: Buckets) -> float | None:
    """Prometheus's estimate: linear within the bucket the rank falls in; the last finite bound when it
    falls in +Inf; None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = fraction * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound
