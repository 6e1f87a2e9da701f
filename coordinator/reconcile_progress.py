"""Progress of one reconciliation pass: counts, rate and ETA in the log and in `cf:reconcile`.

The hash is what `conduit-fleet channels progress`, the HTTP API and the dashboard read. Its fields
are strings: `state` (listing, deleting, creating, done, paused), `run`, `started_at_ms`,
`updated_at_ms`, `finished_at_ms`, `desired`, `existing`, `to_create`, `done`, `created`,
`exists`, `failed`, `blocked_by_cost`, `needs_reconsent`, `deleted`, `remaining`, `rate_per_s`
(created or found existing per real second, over the last `RATE_WINDOW_S`), `eta_s` (-1 when
unknown), `total_cost`, `max_total_cost` and `error` (why the last pass paused, else empty).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

import redis.asyncio as redis
from redis.exceptions import RedisError

from common.keys import Keys

log = logging.getLogger(__name__)

RATE_WINDOW_S = 30.0
LOG_INTERVAL_S = 10.0
COUNTERS = ("desired", "existing", "to_create", "created", "exists", "failed", "blocked_by_cost",
            "needs_reconsent", "deleted", "total_cost", "max_total_cost")


class ReconcileProgress:
    """Counts one pass's outcomes and writes them to `cf:reconcile` at most once per `flush()`."""

    def __init__(self, client: redis.Redis, keys: Keys, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._key = keys.reconcile
        self._clock = clock
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.state = "idle"
        self.error = ""
        self.run = 0
        self.started_at_ms = 0
        self.finished_at_ms = 0
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._last_log = 0.0

    def begin(self, run: int) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.run = run
        self.state = "listing"
        self.error = ""
        self.started_at_ms = int(time.time() * 1000)
        self.finished_at_ms = 0
        self._samples.clear()
        self._last_log = self._clock()

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount

    @property
    def done(self) -> int:
        counts = self.counts
        return counts["created"] + counts["exists"] + counts["failed"] + counts["blocked_by_cost"]

    @property
    def remaining(self) -> int:
        return max(0, self.counts["to_create"] - self.done)

    def rate_per_s(self) -> float:
        """Return subscriptions created or found existing per real second over the last RATE_WINDOW_S."""
        now = self._clock()
        progressed = self.counts["created"] + self.counts["exists"]
        self._samples.append((now, progressed))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        first_at, first_count = self._samples[0]
        elapsed = now - first_at
        return (progressed - first_count) / elapsed if elapsed > 0 else 0.0

    def fields(self) -> dict[str, str]:
        rate = self.rate_per_s()
        if self.remaining == 0:
            eta_s = 0.0
        elif rate > 0:
            eta_s = self.remaining / rate
        else:
            eta_s = -1.0  # unknown: nothing progressed recently
        fields = {name: str(value) for name, value in self.counts.items()}
        fields.update({
            "state": self.state, "run": str(self.run), "error": self.error,
            "started_at_ms": str(self.started_at_ms), "finished_at_ms": str(self.finished_at_ms),
            "updated_at_ms": str(int(time.time() * 1000)), "done": str(self.done),
            "remaining": str(self.remaining), "rate_per_s": f"{rate:.2f}", "eta_s": f"{eta_s:.0f}",
        })
        return fields

    async def flush(self, *, force_log: bool = False) -> None:
        """Write the fields to Redis, and log them every LOG_INTERVAL_S while creating."""
        fields = self.fields()
        now = self._clock()
        if force_log or (self.state == "creating" and now - self._last_log >= LOG_INTERVAL_S):
            self._last_log = now
            log.info("reconcile run %s %s: %s/%s done, %s failed, %s blocked by cost, %s remaining, "
                     "%s per s, ETA %s s", self.run, self.state, fields["done"], fields["to_create"],
                     fields["failed"], fields["blocked_by_cost"], fields["remaining"], fields["rate_per_s"],
                     fields["eta_s"])
        try:
            await self._client.hset(self._key, mapping=fields)
        except (RedisError, OSError) as exc:
            log.warning("could not write reconcile progress to Redis: %s", exc)
