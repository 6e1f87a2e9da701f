"""Capped exponential backoff with full jitter, reset after a healthy run."""

from __future__ import annotations

import random


class Backoff:
    """Delays for consecutive failures: random in [0, min(cap, base * 2**n)], never below `floor`."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 10.0, floor_s: float = 0.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.floor_s = floor_s
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** self.failures))
        self.failures += 1
        return max(self.floor_s, random.uniform(ceiling / 2, ceiling))

    def reset(self) -> None:
        self.failures = 0
