"""Token bucket behind the Helix ``Ratelimit-*`` headers."""

from __future__ import annotations

import math
import time


class TokenBucket:
    """A bucket of ``capacity`` points refilled continuously at ``refill_per_s`` points per real second."""

    def __init__(self, capacity: int, refill_per_s: float) -> None:
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self._points = float(capacity)
        self._updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._points = min(self.capacity, self._points + (now - self._updated) * self.refill_per_s)
        self._updated = now

    def try_take(self, points: int = 1) -> bool:
        """Take ``points`` if the bucket has them; return False and take nothing otherwise."""
        self._refill()
        if self._points < points:
            return False
        self._points -= points
        return True

    def empty(self) -> None:
        """Take every point, so the next call gets 429 until the bucket refills."""
        self._refill()
        self._points = 0.0

    def headers(self) -> dict[str, str]:
        """Return the ``Ratelimit-*`` headers for the bucket's current level."""
        self._refill()
        missing = self.capacity - self._points
        reset_at = time.time() + missing / self.refill_per_s
        return {
            "Ratelimit-Limit": str(self.capacity),
            "Ratelimit-Remaining": str(int(self._points)),
            "Ratelimit-Reset": str(math.ceil(reset_at)),
        }
