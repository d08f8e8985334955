"""A string that never shows itself in logs, reprs or tracebacks."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


class Secret:
    """Wraps a sensitive value (a password, or a URL that may carry one); ``reveal()`` is the only way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def mask_url(url: str) -> str:
    """Returns ``url`` with every password (user info or query parameter) replaced by ``***``, for logs and
    error messages; a URL too malformed to parse is not shown at all."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        query = parse_qsl(parts.query, keep_blank_values=True)
        masked = [(name, "***" if name.lower() in _SECRET_PARAMETERS else value) for name, value in query]
        parts = parts._replace(query=urlencode(masked, safe="/*"))
    return urlunsplit(parts)
