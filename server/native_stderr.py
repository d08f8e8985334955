"""grpc's C core writes its own lines (``E1128 16:34:17.035967 13228 add_port.cc:83] message``) straight to
file descriptor 2, past Python's logging. ``route_to_log`` points that descriptor at a pipe read by a child
process (``python -m server.native_stderr``) that writes each line as a JSON record of the ``grpc.core``
logger, so that the log stays parseable.

A child, not a thread: native code that aborts the process (grpc's fatal checks, faulthandler) writes its last
line just before dying, and only a reader outside the process still reads it. The child ignores SIGINT and
SIGTERM (Ctrl-C reaches the whole process group) and ends when the pipe closes, after the last line.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable

from server.logs import configure_logging

# absl's prefix: severity letter, date, time, thread id, source location.
_NATIVE_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]]+)\] ?(.*)")
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
_finish: Callable[[], None] | None = None  # what ``finish`` runs while the lines are routed


def route_to_log(log_level: str) -> None:
    """From now on, lines written to file descriptor 2 become ``grpc.core`` JSON records.

    ``sys.stderr`` (so the log handler configured afterwards, and error messages) is pointed at the real
    stderr. At exit descriptor 2 is restored and the child is given time to log what is left; being
    registered first, that runs after the exit handlers registered later (the embedded PostgreSQL's stop).
    """
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-m", "server.native_stderr", log_level], stdin=read_end, stdout=real_stderr
    )
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(real_stderr, "w", buffering=1)  # noqa: SIM115 - lives as long as the process

    def restore() -> None:
        global _finish
        if _finish is None:
            return  # already done
        _finish = None
        os.dup2(real_stderr, 2)  # closes the pipe's last write end: the child logs what is left and ends
        try:
            child.wait(timeout=2)
        except subprocess.TimeoutExpired:
            child.kill()

    global _finish
    _finish = restore
    atexit.register(restore)


def finish() -> None:
    """Writes out every native line so far and sends later ones straight to stderr: called before a last
    message to the operator, which would otherwise race the child's lines to the terminal."""
    if _finish is not None:
        _finish()


def _forward(log_level: str) -> None:
    """The child's work: each line of stdin as a log record, written as JSON to stdout (the real stderr)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stderr = sys.stdout
    configure_logging(log_level)
    log = logging.getLogger("grpc.core")
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        parsed = _NATIVE_LINE.fullmatch(line)
        if parsed is None:
            log.warning(line)
        else:
            level, source, message = parsed.groups()
            log.log(_LEVELS[level], message, extra={"source": source})


if __name__ == "__main__":
    _forward(sys.argv[1])
