"""An event counter that a receiver process shares with the benchmark through a memory-mapped file.

Layout: event count (int64), time of the first event of the current burst and time of the newest
event (float64, `time.time()` seconds). A burst starts after `BURST_GAP_S` without events, so each
trial reads its own first-event time without telling the receiver.
"""

from __future__ import annotations

import mmap
import struct
import time
from pathlib import Path

LAYOUT = struct.Struct("<qdd")
BURST_GAP_S = 0.5


class CounterWriter:
    """The receiver's side: `add()` once per handled event."""

    def __init__(self, path: Path) -> None:
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), LAYOUT.size)
        self.count = 0
        self.first_s = 0.0
        self.last_s = 0.0

    def add(self, count: int = 1) -> None:
        now = time.time()
        if now - self.last_s > BURST_GAP_S:
            self.first_s = now
        self.last_s = now
        self.count += count
        LAYOUT.pack_into(self._map, 0, self.count, self.first_s, self.last_s)


class CounterReader:
    """The benchmark's side."""

    def __init__(self, path: Path) -> None:
        path.write_bytes(b"\0" * LAYOUT.size)
        self.path = path
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), LAYOUT.size)

    def read(self) -> tuple[int, float, float]:
        """Return (count, first event of the current burst, newest event)."""
        return LAYOUT.unpack_from(self._map, 0)
