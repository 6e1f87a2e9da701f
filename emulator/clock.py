"""Wall-clock timestamps in the RFC 3339 forms that Twitch sends."""

from __future__ import annotations

import itertools
import time

# Twitch timestamps carry 3, 6 or 9 fractional digits; clients must parse all three.
_DIGIT_CYCLE = itertools.cycle((9, 6, 3))
_second_cache: tuple[int, str] = (-1, "")


def rfc3339_now(digits: int | None = None) -> str:
    """Return the current UTC time as RFC 3339; ``digits`` None rotates 9, 6, 3."""
    global _second_cache
    if digits is None:
        digits = next(_DIGIT_CYCLE)
    now_ns = time.time_ns()
    seconds, fraction_ns = divmod(now_ns, 1_000_000_000)
    if _second_cache[0] != seconds:
        _second_cache = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    fraction = f"{fraction_ns:09d}"[:digits]
    return f"{_second_cache[1]}.{fraction}Z"


class MessageClock:
    """The ``message_timestamp`` source of one emulator: fixed digits, or ``mixed`` rotation."""

    def __init__(self, timestamp_digits: str) -> None:
        self.digits = None if timestamp_digits == "mixed" else int(timestamp_digits)

    def now(self) -> str:
        return rfc3339_now(self.digits)
