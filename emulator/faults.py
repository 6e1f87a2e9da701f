"""Injected Helix failures: canned error responses and per-shard bind errors."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

logger = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class HelixFault:
    """Answer the next ``remaining`` calls to ``method path`` with ``status`` and apply nothing.

    ``*`` as the method or the path matches every Helix call.

    ``body`` replaces the whole JSON body, ``message`` only the error message.
    ``ratelimit_remaining`` overrides the ``Ratelimit-Remaining`` header.
    """

    method: str
    path: str
    status: int
    remaining: int
    body: dict[str, Any] | None = None
    message: str | None = None
    ratelimit_remaining: int | None = None


@dataclasses.dataclass(slots=True)
class ShardErrorFault:
    """Report these shard ids as not connected on the next ``remaining`` Update Conduit Shards calls that name them."""

    shard_ids: frozenset[str]
    remaining: int


class FaultStore:
    def __init__(self) -> None:
        self.helix: list[HelixFault] = []
        self.shard_errors: list[ShardErrorFault] = []

    def add_helix(self, fault: HelixFault) -> None:
        self.helix.append(fault)
        logger.info("fault added: %s %s -> %d for %d calls", fault.method, fault.path, fault.status, fault.remaining)

    def add_shard_error(self, fault: ShardErrorFault) -> None:
        self.shard_errors.append(fault)
        logger.info("fault added: shard errors for %s on %d calls", sorted(fault.shard_ids), fault.remaining)

    def clear(self) -> None:
        self.helix.clear()
        self.shard_errors.clear()
        logger.info("faults cleared")

    def take_helix(self, method: str, path: str) -> HelixFault | None:
        """Consume one use of the first fault matching the call, if any."""
        for fault in self.helix:
            method_matches = fault.method in ("*", method)
            path_matches = fault.path == "*" or fault.path.rstrip("/") == path.rstrip("/")
            if method_matches and path_matches:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.helix.remove(fault)
                return fault
        return None

    def take_shard_errors(self, shard_ids: set[str]) -> set[str]:
        """Return the shard ids of this call that must fail, consuming one use of each matching fault."""
        failing: set[str] = set()
        for fault in list(self.shard_errors):
            hit = fault.shard_ids & shard_ids
            if not hit:
                continue
            failing |= hit
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.shard_errors.remove(fault)
        return failing

    def to_wire(self) -> dict[str, Any]:
        return {
            "helix": [dataclasses.asdict(fault) for fault in self.helix],
            "shard_errors": [
                {"shard_ids": sorted(fault.shard_ids), "remaining": fault.remaining} for fault in self.shard_errors
            ],
        }
