"""The exception tree of conduit-fleet.

    FleetError
    ├── SettingsError          a setting has an invalid value
    ├── RedisUnavailable       Redis could not be reached
    ├── TokenError             the app token could not be obtained or renewed
    └── HelixError             a Helix call failed (carries status, retryable)
        ├── Unauthorized       401 after one token renewal
        ├── RateLimited        429 with Ratelimit-Remaining 0
        ├── LimitReached       429 that is a limit (conduits, same type+condition)
        │   └── CostLimitReached   429 because max_total_cost is spent
        ├── CircuitOpen        not sent: recent calls kept failing with 5xx or network errors
        ├── ConduitNotFound    404 on a conduit endpoint: the conduit is gone
        └── Conflict           409: the subscription already exists
"""

from __future__ import annotations


class FleetError(Exception):
    """Base class of every error conduit-fleet raises on purpose."""


class SettingsError(FleetError, ValueError):
    """Raised when an environment variable has an invalid value."""


class RedisUnavailable(FleetError):
    """Raised when Redis refuses or drops connections."""


class TokenError(FleetError):
    """Raised when the app access token cannot be obtained or renewed."""


class HelixError(FleetError):
    """Raised when a Helix call fails; `retryable` is True when trying again may help."""

    retryable = False

    def __init__(self, status: int, message: str, *, method: str = "", path: str = "") -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        super().__init__(f"Helix {method} {path} failed with {status}: {message}")


class ServerError(HelixError):
    """Raised for 5xx responses and network errors after the retries ran out."""

    retryable = True


class Unauthorized(HelixError):
    """Raised when Helix rejects the token even after one renewal."""


class RateLimited(HelixError):
    """Raised for a real rate limit (429 with Ratelimit-Remaining 0) when waiting is not allowed."""

    retryable = True

    def __init__(self, *args, reset_at_s: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reset_at_s = reset_at_s


class LimitReached(HelixError):
    """Raised for a 429 that is a limit (conduit count, cost, same type and condition), not a rate limit."""


class CostLimitReached(LimitReached):
    """Raised for a 429 because the subscriptions' total cost would pass max_total_cost."""


class CircuitOpen(HelixError):
    """Raised without calling Helix while the circuit breaker is open after repeated 5xx or network errors."""

    retryable = True


class ConduitNotFound(HelixError):
    """Raised when a conduit endpoint returns 404, because the conduit no longer exists."""


class Conflict(HelixError):
    """Raised when Create EventSub Subscription returns 409 because the subscription exists."""
