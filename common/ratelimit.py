"""One Helix rate budget for the whole fleet, and a circuit breaker for failing Helix calls.

Twitch gives each app one token bucket of points for app-token requests, refilled continuously, and
reports it in the `Ratelimit-Limit` (points per minute), `Ratelimit-Remaining` and `Ratelimit-Reset`
headers of every Helix response (Twitch API guide, "Twitch rate limits"). Every process of the fleet
draws from that one bucket, so `RateLimiter` keeps a copy of it in Redis (`cf:ratelimit`): each call
reserves a point before it is sent, and each response corrects the copy from the headers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Mapping

import redis.asyncio as redis
from redis.exceptions import RedisError

from .errors import CircuitOpen
from .keys import RATE_ACQUIRE, RATE_OBSERVE, Keys

log = logging.getLogger(__name__)

# Clients observe 800 points per minute; Twitch's page does not state the number. The first
# response's Ratelimit-Limit header replaces it.
DEFAULT_LIMIT_PER_MIN = 800
# Points kept back from what Twitch reports, for calls from several processes that reach Twitch in
# a different order than they reserved their points. It lowers only the burst at start, not the
# steady rate. With 5, a 100,000-subscription run on a busy 2-CPU machine still saw two 429s.
DEFAULT_MARGIN = 20


@dataclasses.dataclass(frozen=True, slots=True)
class Reservation:
    """The result of `RateLimiter.acquire`: the seconds waited and the count of responses observed before it."""

    waited_s: float
    observed_before: int | None = None


class RateLimiter:
    """The fleet's shared Helix token bucket; `acquire()` before a call, `observe()` after it."""

    def __init__(self, client: redis.Redis, keys: Keys, *, time_scale: float = 1.0,
                 default_limit: int = DEFAULT_LIMIT_PER_MIN, margin: int = DEFAULT_MARGIN,
                 key: str | None = None) -> None:
        self._client = client
        # Twitch keeps another bucket for the user token's calls, and `key` names the Redis copy of it.
        self._key = key or keys.ratelimit
        self._minute_ms = 60_000 * time_scale
        self._default_limit = default_limit
        self._margin = margin
        self._acquire = client.register_script(RATE_ACQUIRE)
        self._observe = client.register_script(RATE_OBSERVE)
        self._redis_failed = False
        self.waited_s = 0.0

    async def acquire(self, points: int = 1) -> Reservation:
        """Reserve `points` and sleep until the bucket contains them. Pass the result to `observe`."""
        observed_before: int | None = None
        try:
            wait_ms, observed = await self._acquire(keys=[self._key], args=[self._default_limit, self._minute_ms, points])
            wait_ms, observed_before = int(wait_ms), int(observed)
            self._redis_failed = False
        except (RedisError, OSError) as exc:
            # Without Redis, pace this process alone at the default rate; Twitch's 429 still protects.
            if not self._redis_failed:
                log.warning("the shared rate limiter is unreachable (%s); pacing this process alone", exc)
                self._redis_failed = True
            wait_ms = points * self._minute_ms / self._default_limit
        if wait_ms > 0:
            self.waited_s += wait_ms / 1000
            await asyncio.sleep(wait_ms / 1000)
        return Reservation(wait_ms / 1000, observed_before)

    async def observe(self, headers: Mapping[str, str] | None, *, rate_limited: bool = False,
                      reservation: Reservation | None = None) -> None:
        """Correct the bucket from a response's `Ratelimit-*` headers, or None for a call that got no response.

        `reservation` is the result of `acquire` for the call. Without it, a late response can raise
        the bucket above what Twitch has left.
        """
        limit, remaining, reset = "", "", "0"
        if headers is not None:
            try:
                limit = str(int(headers["Ratelimit-Limit"])) if "Ratelimit-Limit" in headers else ""
                remaining = str(int(headers["Ratelimit-Remaining"])) if "Ratelimit-Remaining" in headers else ""
                reset = str(float(headers.get("Ratelimit-Reset", 0)))
            except ValueError:
                log.warning("ignoring malformed Ratelimit headers: %r", {k: v for k, v in headers.items()
                                                                         if k.lower().startswith("ratelimit")})
                limit, remaining, reset = "", "", "0"
        observed_before = "" if reservation is None or reservation.observed_before is None \
            else str(reservation.observed_before)
        args = [self._default_limit, self._minute_ms, limit, remaining, reset, self._margin,
                "1" if rate_limited else "0", observed_before]
        try:
            await self._observe(keys=[self._key], args=args)
        except (RedisError, OSError) as exc:
            log.debug("could not record Ratelimit headers in Redis: %s", exc)

    async def snapshot(self) -> dict[str, str]:
        """Return the stored bucket fields (`limit`, `tokens`, `remaining`, `throttled`, ...)."""
        raw = await self._client.hgetall(self._key)
        return {key.decode(): value.decode() for key, value in raw.items()}


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops Helix calls for `cooldown_s` after `threshold` consecutive 5xx or network failures.

    After the cooldown one trial call goes through (half-open): success closes the breaker, and
    failure opens it for another cooldown.
    """

    def __init__(self, *, threshold: int = 5, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.times_opened = 0
        self._trial_running = False

    def before_call(self, method: str = "", path: str = "") -> None:
        """Raise CircuitOpen unless a call may go out now."""
        if self.state is BreakerState.CLOSED:
            return
        if self.state is BreakerState.OPEN and self._clock() - self.opened_at >= self.cooldown_s:
            self.state = BreakerState.HALF_OPEN
            self._trial_running = False
        if self.state is BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return
        retry_in_s = max(0.0, self.cooldown_s - (self._clock() - self.opened_at))
        raise CircuitOpen(0, f"circuit breaker open after {self.failures} consecutive failures; "
                             f"next trial in {retry_in_s:.1f} s", method=method, path=path)

    def record_success(self) -> None:
        if self.state is not BreakerState.CLOSED:
            log.info("Helix circuit breaker closed: a trial call succeeded")
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._trial_running = False

    def record_failure(self) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or (self.state is BreakerState.CLOSED
                                                   and self.failures >= self.threshold):
            self.state = BreakerState.OPEN
            self.opened_at = self._clock()
            self.times_opened += 1
            self._trial_running = False
            log.error("Helix circuit breaker open after %d consecutive failures; pausing calls for %.1f s",
                      self.failures, self.cooldown_s)
