"""One call per path with ``nghttp -v`` before any load, checking ``grpc-status: 0``.

h2load would report a wrong path, a bad frame or a failing handler as thousands of
"succeeded" requests; one verbose call shows the trailer and the grpc-message first.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

_STATUS = re.compile(r"recv \(stream_id=\d+\) grpc-status: (\d+)")
_MESSAGE = re.compile(r"recv \(stream_id=\d+\) grpc-message: ?(.*)")
_HTTP_STATUS = re.compile(r"recv \(stream_id=\d+\) :status: (\d+)")


@dataclass(frozen=True)
class CallCheck:
    """What one nghttp call returned."""

    http_status: int | None
    grpc_status: int | None
    grpc_message: str

    @property
    def ok(self) -> bool:
        return self.http_status == 200 and self.grpc_status == 0

    def describe(self) -> str:
        return f"HTTP {self.http_status}, grpc-status {self.grpc_status}, grpc-message {self.grpc_message!r}"


def parse_nghttp(output: str) -> CallCheck:
    """Read the response status and the gRPC trailers out of ``nghttp -v`` output."""
    http = _HTTP_STATUS.search(output)
    status = _STATUS.search(output)
    message = _MESSAGE.search(output)
    return CallCheck(
        http_status=int(http.group(1)) if http else None,
        grpc_status=int(status.group(1)) if status else None,
        grpc_message=message.group(1).strip() if message else "",
    )


async def check_call(nghttp: str, url: str, frame: Path, timeout_s: float = 15.0) -> CallCheck:
    """POST one frame to url with nghttp and return the statuses it saw."""
    # fmt: off
    process = await asyncio.create_subprocess_exec(
        nghttp, "-v", "-n",  # -n: drop the (binary) response body, keep the frame log
        "-d", str(frame),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    # fmt: on
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        return CallCheck(None, None, f"nghttp got no answer within {timeout_s:g}s")
    return parse_nghttp(out.decode("utf-8", errors="replace"))
