"""Emulator settings, built from keyword arguments or from ``EMULATOR_*`` variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

TIMESTAMP_DIGIT_CHOICES = ("3", "6", "9", "mixed")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmulatorSettings:
    """Settings of one emulator instance.

    Durations named ``*_s`` are Twitch seconds; each lasts ``value * time_scale``
    real seconds. Values on the wire (``expires_in``, ``keepalive_timeout_seconds``)
    stay unscaled.
    """

    host: str = "127.0.0.1"
    port: int = 8090
    time_scale: float = 1.0
    client_id: str = "cf-dev-client"
    client_secret: str = "cf-dev-secret"
    rate_limit_per_min: int = 800
    bind_deadline_s: float = 10.0
    reconnect_grace_s: float = 30.0
    token_expires_in_s: int = 5_000_000
    max_conduits: int = 5
    max_shards: int = 20_000
    page_size: int = 100
    reconnect_overlap_resend: int = 3
    seed: int | None = None
    timestamp_digits: str = "mixed"
    ping_interval_s: float | None = None
    expect_pongs: bool = True
    conduit_idle_delete_s: float = 72 * 3600.0
    disabled_subscription_ttl_s: float = 60.0
    ws_max_connections_per_user: int = 3
    ws_max_subscriptions_per_connection: int = 300
    max_total_cost: int = 10_000
    ws_max_total_cost: int = 10
    ws_limit_status: int = 429
    max_same_type_condition: int = 3
    helix_log_size: int = 1000
    query_fields_as_body: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.timestamp_digits, int) and not isinstance(self.timestamp_digits, bool):
            object.__setattr__(self, "timestamp_digits", str(self.timestamp_digits))
        for field in dataclasses.fields(self):
            check = _CHECKS.get(field.name)
            if check is None:
                continue
            value = getattr(self, field.name)
            allowed = check(value)
            if allowed is not None:
                raise ValueError(
                    f"invalid {field.name}={value!r}: expected {allowed}"
                )

    def real_s(self, twitch_s: float) -> float:
        """Convert a Twitch duration to real seconds."""
        return twitch_s * self.time_scale

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> EmulatorSettings:
        """Build settings from ``EMULATOR_<FIELD>`` variables; unset ones keep defaults.

        Raises ``ValueError`` naming the variable, its value and what is allowed.
        """
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = "EMULATOR_" + field.name.upper()
            raw = environ.get(name)
            if raw is None:
                continue
            values[field.name] = _parse_env(name, raw, field.name)
        return cls(**values)


def _parse_env(name: str, raw: str, field_name: str) -> Any:
    parse, allowed_text = _PARSERS[field_name]
    try:
        value = parse(raw)
    except ValueError:
        raise ValueError(f"invalid {name}={raw!r}: expected {allowed_text}") from None
    allowed = _CHECKS[field_name](value) if field_name in _CHECKS else None
    if allowed is not None:
        raise ValueError(f"invalid {name}={raw!r}: expected {allowed}")
    return value


def _optional_int(raw: str) -> int | None:
    if raw.strip() == "":
        return None
    return int(raw)


def _non_empty(raw: str) -> str:
    if not raw.strip():
        raise ValueError(raw)
    return raw


def _int_range(low: int, high: int | None, text: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return text
        if value < low or (high is not None and value > high):
            return text
        return None

    return check


def _positive_float(text: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            return text
        if value != value or value == float("inf"):
            return text
        return None

    return check


def _text_check(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "a non-empty string"
    return None


def _timestamp_digits_check(value: Any) -> str | None:
    if value not in TIMESTAMP_DIGIT_CHOICES:
        return "one of " + ", ".join(TIMESTAMP_DIGIT_CHOICES)
    return None


def _optional_positive_float(value: Any) -> str | None:
    if value is None:
        return None
    return _positive_float("a number of seconds > 0 or empty")(value)


def _bool_check(value: Any) -> str | None:
    if not isinstance(value, bool):
        return "true or false"
    return None


def _limit_status_check(value: Any) -> str | None:
    if value not in (400, 429):
        return "400 or 429"
    return None


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _optional_float(raw: str) -> float | None:
    if raw.strip() == "":
        return None
    return float(raw)


def _seed_check(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return "an integer or empty"
    return None


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "host": _text_check,
    "port": _int_range(0, 65535, "an integer port 0..65535 (0 picks a free port)"),
    "time_scale": _positive_float("a number > 0"),
    "client_id": _text_check,
    "client_secret": _text_check,
    "rate_limit_per_min": _int_range(1, None, "an integer >= 1"),
    "bind_deadline_s": _positive_float("a number of seconds > 0"),
    "reconnect_grace_s": _positive_float("a number of seconds > 0"),
    "token_expires_in_s": _int_range(1, None, "an integer number of seconds >= 1"),
    "max_conduits": _int_range(1, None, "an integer >= 1"),
    "max_shards": _int_range(1, None, "an integer >= 1"),
    "page_size": _int_range(1, None, "an integer >= 1"),
    "reconnect_overlap_resend": _int_range(0, None, "an integer >= 0"),
    "seed": _seed_check,
    "timestamp_digits": _timestamp_digits_check,
    "ping_interval_s": _optional_positive_float,
    "expect_pongs": _bool_check,
    "conduit_idle_delete_s": _positive_float("a number of seconds > 0"),
    "disabled_subscription_ttl_s": _positive_float("a number of seconds > 0"),
    "ws_max_connections_per_user": _int_range(1, None, "an integer >= 1"),
    "ws_max_subscriptions_per_connection": _int_range(1, None, "an integer >= 1"),
    "max_total_cost": _int_range(0, None, "an integer >= 0"),
    "ws_max_total_cost": _int_range(0, None, "an integer >= 0"),
    "ws_limit_status": _limit_status_check,
    "max_same_type_condition": _int_range(1, None, "an integer >= 1"),
    "helix_log_size": _int_range(0, None, "an integer >= 0"),
    "query_fields_as_body": _bool_check,
}

_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "host": (_non_empty, "a non-empty host name or address"),
    "port": (int, "an integer port 0..65535"),
    "time_scale": (float, "a number > 0"),
    "client_id": (_non_empty, "a non-empty string"),
    "client_secret": (_non_empty, "a non-empty string"),
    "rate_limit_per_min": (int, "an integer >= 1"),
    "bind_deadline_s": (float, "a number of seconds > 0"),
    "reconnect_grace_s": (float, "a number of seconds > 0"),
    "token_expires_in_s": (int, "an integer number of seconds >= 1"),
    "max_conduits": (int, "an integer >= 1"),
    "max_shards": (int, "an integer >= 1"),
    "page_size": (int, "an integer >= 1"),
    "reconnect_overlap_resend": (int, "an integer >= 0"),
    "seed": (_optional_int, "an integer or empty"),
    "timestamp_digits": (str.strip, "3, 6, 9 or mixed"),
    "ping_interval_s": (_optional_float, "a number of seconds > 0 or empty"),
    "expect_pongs": (_parse_bool, "true or false"),
    "conduit_idle_delete_s": (float, "a number of seconds > 0"),
    "disabled_subscription_ttl_s": (float, "a number of seconds > 0"),
    "ws_max_connections_per_user": (int, "an integer >= 1"),
    "ws_max_subscriptions_per_connection": (int, "an integer >= 1"),
    "max_total_cost": (int, "an integer >= 0"),
    "ws_max_total_cost": (int, "an integer >= 0"),
    "ws_limit_status": (int, "400 or 429"),
    "max_same_type_condition": (int, "an integer >= 1"),
    "helix_log_size": (int, "an integer >= 0"),
    "query_fields_as_body": (_parse_bool, "true or false"),
}
