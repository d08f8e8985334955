"""Argon2id password hashing, run in a worker thread so that hashing never stalls the event loop."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.low_level import ARGON2_VERSION
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    """Hashes and checks passwords; ``verify_absent`` spends the same time when there is no user to check."""

    def __init__(self, *, time_cost: int, memory_cost_kib: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=1)
        # A hash to verify against when the email is unknown, so that the answer takes as long as a wrong
        # password and does not tell an attacker which emails have accounts.
        self._decoy_hash = self._hasher.hash("decoy password that matches nothing")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await asyncio.to_thread(self._verify, password_hash, password)

    def is_weaker(self, password_hash: str) -> bool:
        """Whether ``password_hash`` was made with weaker parameters than the configured ones: another type or
        an older version of Argon2, a lower time or memory cost. Cheap: it only reads the parameters written
        in the hash. A stronger hash is not weaker, so replicas configured differently during a rollout
        never take turns rewriting each other's hashes."""
        try:
            stored = extract_parameters(password_hash)
        except InvalidHashError:
            return True
        wanted = self._hasher
        return (
            stored.type is not Type.ID
            or stored.version < ARGON2_VERSION
            or stored.time_cost < wanted.time_cost
            or stored.memory_cost < wanted.memory_cost
        )

    async def verify_absent(self, password: str) -> bool:
        """Burns one verification's worth of time; always False."""
        await asyncio.to_thread(self._verify, self._decoy_hash, password)
        return False

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
