"""WHERE clauses built from fixed SQL fragments, each value a numbered parameter: no text of a request ever
becomes SQL."""

from __future__ import annotations

from typing import Any


class Conditions:
    """Fragments joined by AND, and the statement's arguments (those given first, then one per value added)."""

    def __init__(self, *args: Any) -> None:
        self.args: list[Any] = list(args)
        self._fragments: list[str] = []

    def add(self, fragment: str, *values: Any) -> None:
        """``fragment`` with ``{}`` placeholders, filled with the parameter numbers of ``values``."""
        self._fragments.append(fragment.format(*(self.parameter(value) for value in values)))

    def sql(self) -> str:
        return " AND ".join(self._fragments) if self._fragments else "true"

    def parameter(self, value: Any) -> str:
        """Adds ``value`` as the next numbered parameter and returns its placeholder (``$n``)."""
        self.args.append(value)
        return f"${len(self.args)}"
