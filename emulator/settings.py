"""Emulator settings, built from keyword arguments or from ``EMULATOR_*`` variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any


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

    def __post_init__(self) -> None:
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
}
