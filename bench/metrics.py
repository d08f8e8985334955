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


async def handled_count(port: int, method_path: str, code: str | None = "OK", timeout_s: float = 10.0) -> int:
    """Scrape the server at 127.0.0.1:port and return the count of method_path's answers with ``code``."""
    text = await asyncio.to_thread(_scrape, port, timeout_s)
    return parse_handled_count(text, method_path, code)
