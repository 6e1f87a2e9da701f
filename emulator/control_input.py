"""Input checks for the control API; each raises a 400 HelixError naming the field."""

from __future__ import annotations

from typing import Any

from .helix_base import HelixError


def optional_number(body: dict[str, Any], name: str, default: float | None, low: float, high: float | None = None,
                    low_inclusive: bool = True) -> float | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HelixError(400, f"{name} must be a number, got {value!r}")
    too_low = value < low if low_inclusive else value <= low
    if too_low or (high is not None and value > high):
        bound = f">= {low}" if low_inclusive else f"> {low}"
        upper = f" and <= {high}" if high is not None else ""
        raise HelixError(400, f"invalid {name} {value!r}: expected a number {bound}{upper}")
    return float(value)


def optional_int(body: dict[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise HelixError(400, f"invalid {name} {value!r}: expected an integer >= {low}")
    return value


def string_list(body: dict[str, Any], name: str, required: bool = False) -> list[str] | None:
    value = body.get(name)
    if value is None:
        if required:
            raise HelixError(400, f"missing {name}: expected a list of strings")
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise HelixError(400, f"invalid {name} {value!r}: expected a list of strings")
    return value


def selection(body: dict[str, Any]) -> tuple[list[str] | None, list[str] | None, bool]:
    """Return (session_ids, shard_ids, all) from a body that must name at least one."""
    session_ids = string_list(body, "session_ids")
    shard_ids = string_list(body, "shard_ids")
    everything = body.get("all", False)
    if not isinstance(everything, bool):
        raise HelixError(400, f"invalid all {everything!r}: expected true or false")
    if session_ids is None and shard_ids is None and not everything:
        raise HelixError(400, "name the sessions: session_ids, shard_ids or all: true")
    return session_ids, shard_ids, everything
