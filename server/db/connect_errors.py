"""Why PostgreSQL turned a connection away, when trying again cannot help: the one classification shared by the
server's start, its health monitor and ``python -m server check``.

Retrying cures what passes: a network failure (refused, reset, unreachable, a name that does not resolve yet),
a timeout, PostgreSQL starting up or shutting down (CannotConnectNowError), out of connections
(TooManyConnectionsError) or of another resource. These are retried with backoff and jitter.

It does not cure a password PostgreSQL refuses, a role or database it does not know, a privilege the role
lacks, a DSN asyncpg cannot use, or TLS that the server does not offer or whose certificate does not verify.
Each is said in one line naming the cause and the setting to fix; retrying them with backoff would only hide
a wrong deployment behind what looks like an outage, and fill PostgreSQL's log with failed logins.

asyncpg tells these apart by exception class but for one case: a server that declines TLS makes it raise a
bare ConnectionError (whose subclasses are the network failures), and so do passing failures of the TLS
request: a peer that closes the connection before answering it (a proxy or PgBouncer accepting during a
failover: "unexpected connection_lost() call"), or one that answers it with an error (a PostgreSQL that could
not start a backend for it: "server sent an error response during SSL exchange"). Only asyncpg's own words for the
refusal, "rejected SSL upgrade", under an sslmode that demands TLS, are taken as the configuration problem;
every other bare ConnectionError is retried.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from server.config import TLS_REQUIRED

# asyncpg's ConnectionError when the server answers the TLS request with "no" (asyncpg/connect_utils.py,
# TLSUpgradeProto): 'PostgreSQL server at "host:port" rejected SSL upgrade'.
_TLS_REJECTED = re.compile(r'PostgreSQL server at ".*" rejected SSL upgrade', re.DOTALL)
# TLS failures that are a broken connection, not a TLS setting: retried like other network failures.
_TLS_INTERRUPTED = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


class _Target:
    """What a DSN names, as the messages say it (``role 'app'``, ``database 'app'``): never its password."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        role = unquote(parts.username) if parts.username else query.get("user", [None])[0]
        database = unquote(parts.path.lstrip("/")) or query.get("dbname", [None])[0]
        self.role = f"role {role!r}" if role else "the default role"
        self.database = f"database {database!r}" if database else "the default database"
        self.sslmode = query.get("sslmode", ["prefer"])[0]
        # As written in the DSN and as sent: an error may echo either.
        self.passwords = {parts.password, unquote(parts.password)} if parts.password else set()


# Most specific class first; each says what happened and what to change, quoting the error where its words
# (the server's or asyncpg's) name the detail: a pg_hba.conf line, a certificate's complaint.
_REFUSALS: list[tuple[type[BaseException], Callable[[_Target, BaseException], str]]] = [
    (
        asyncpg.exceptions.InvalidPasswordError,
        lambda t, e: f"PostgreSQL refused the password for {t.role}: check the password in DATABASE_URL "
        "(or DB_PASSWORD)",
    ),
    (
        asyncpg.exceptions.InvalidAuthorizationSpecificationError,
        lambda t, e: f"PostgreSQL refused {t.role} ({e}): check the user in DATABASE_URL (or DB_USER), and that "
        "pg_hba.conf lets it in from this host",
    ),
    (
        asyncpg.exceptions.InvalidCatalogNameError,
        lambda t, e: f"PostgreSQL has no {t.database}: check the database in DATABASE_URL (or DB_NAME), or "
        "create it",
    ),
    (
        asyncpg.exceptions.InsufficientPrivilegeError,
        lambda t, e: f"{t.role} lacks a privilege on {t.database} ({e}): grant it, or use another role in "
        "DATABASE_URL (or DB_USER)",
    ),
    (
        asyncpg.exceptions.ClientConfigurationError,
        lambda t, e: f"DATABASE_URL cannot be used ({e}): correct it (or DB_HOST, DB_PORT, DB_NAME, DB_USER, "
        "DB_SSLMODE)",
    ),
    (
        ssl.SSLCertVerificationError,
        lambda t, e: f"PostgreSQL's TLS certificate does not verify ({e}) under sslmode={t.sslmode}: name the CA "
        "that signed it as sslrootcert in DATABASE_URL (or DB_SSLROOTCERT), or check the host name",
    ),
    (
        ssl.SSLError,
        lambda t, e: f"the TLS handshake with PostgreSQL failed ({e}) under sslmode={t.sslmode}: check the "
        "server's TLS settings and the sslmode in DATABASE_URL (or DB_SSLMODE)",
    ),
]


def configuration_problem(exc: BaseException, dsn: str) -> str | None:
    """What no retry of a connection to ``dsn`` can fix, said in one line with the setting to change; None when
    ``exc`` may pass (network, timeout, a server starting up or out of connections, or anything unknown)."""
    if isinstance(exc, _TLS_INTERRUPTED):
        return None
    target = _Target(dsn)
    for kind, explain in _REFUSALS:
        if isinstance(exc, kind):
            return _without_password(explain(target, exc), target)
    if type(exc) is ConnectionError and target.sslmode in TLS_REQUIRED and _TLS_REJECTED.fullmatch(str(exc)):
        return _without_password(
            f"PostgreSQL does not accept TLS, which sslmode={target.sslmode} requires ({exc}): turn ssl on in "
            "PostgreSQL, or set sslmode=prefer (or disable) in DATABASE_URL (or DB_SSLMODE)",
            target,
        )
    return None


def _without_password(text: str, target: _Target) -> str:
    """``text`` with the DSN's password masked, should an error have echoed part of the DSN."""
    for password in target.passwords:
        text = text.replace(password, "***")
    return text
