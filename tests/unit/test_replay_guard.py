"""ReplayGuard: RFC 3339 timestamps with 3, 6 or 9 fractional digits, `Z` or `+00:00`, around the window."""

from __future__ import annotations

import time

import pytest

from shard_worker.frames import ReplayGuard

# 2023-11-14T22:13:20Z, a whole second, so the guard's cutoff is exactly now - window.
NOW_S = 1_700_000_000.0
WINDOW_S = 600.0


def rfc3339(epoch_s: float, digits: int, suffix: str = "Z") -> str:
    """Format a Unix time as RFC 3339 UTC with `digits` fractional digits."""
    whole = int(epoch_s)
    fraction_ns = round((epoch_s - whole) * 1_000_000_000)
    fraction = f"{fraction_ns:09d}"[:digits]
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{fraction}{suffix}"


@pytest.mark.parametrize("digits", [3, 6, 9])
@pytest.mark.parametrize("suffix", ["Z", "+00:00"])
def test_guard_older_than_window_stale(digits: int, suffix: str) -> None:
    guard = ReplayGuard(WINDOW_S)
    timestamp = rfc3339(NOW_S - WINDOW_S - 1.5, digits, suffix)

    assert guard.is_stale(timestamp, NOW_S) is True


@pytest.mark.parametrize("digits", [3, 6, 9])
@pytest.mark.parametrize("suffix", ["Z", "+00:00"])
def test_guard_inside_window_fresh(digits: int, suffix: str) -> None:
    guard = ReplayGuard(WINDOW_S)
    timestamp = rfc3339(NOW_S - WINDOW_S + 1.5, digits, suffix)

    assert guard.is_stale(timestamp, NOW_S) is False


@pytest.mark.parametrize("digits", [3, 6, 9])
@pytest.mark.parametrize("suffix", ["Z", "+00:00"])
def test_guard_current_time_fresh(digits: int, suffix: str) -> None:
    guard = ReplayGuard(WINDOW_S)

    assert guard.is_stale(rfc3339(NOW_S - 0.25, digits, suffix), NOW_S) is False


@pytest.mark.parametrize("suffix", ["Z", "+00:00"])
def test_guard_half_second_past_window(suffix: str) -> None:
    guard = ReplayGuard(WINDOW_S)

    assert guard.is_stale(rfc3339(NOW_S - WINDOW_S - 0.5, 9, suffix), NOW_S) is True


@pytest.mark.parametrize("suffix", ["Z", "+00:00"])
def test_guard_half_second_inside_window(suffix: str) -> None:
    guard = ReplayGuard(WINDOW_S)

    assert guard.is_stale(rfc3339(NOW_S - WINDOW_S + 0.5, 9, suffix), NOW_S) is False


def test_guard_other_offset_parsed() -> None:
    guard = ReplayGuard(WINDOW_S)
    # 22:13:20Z is 00:13:20 at +02:00, so these are 700 s old and 100 s old.
    old = "2023-11-14T23:51:40.123456+02:00"
    recent = "2023-11-15T00:11:40.123456789+02:00"

    assert guard.is_stale(old, NOW_S) is True
    assert guard.is_stale(recent, NOW_S) is False


def test_guard_whole_seconds_z() -> None:
    guard = ReplayGuard(WINDOW_S)

    assert guard.is_stale("2023-11-14T22:03:18Z", NOW_S) is True
    assert guard.is_stale("2023-11-14T22:03:21Z", NOW_S) is False


@pytest.mark.parametrize("timestamp", ["", "yesterday", "2023-13-40T99:00:00+00:00"])
def test_guard_unparseable_stale(timestamp: str) -> None:
    assert ReplayGuard(WINDOW_S).is_stale(timestamp, NOW_S) is True


def test_guard_cutoff_follows_clock() -> None:
    guard = ReplayGuard(WINDOW_S)
    timestamp = rfc3339(NOW_S - WINDOW_S + 5, 6)

    assert guard.is_stale(timestamp, NOW_S) is False
    assert guard.is_stale(timestamp, NOW_S + 10) is True


def test_guard_short_window() -> None:
    guard = ReplayGuard(2.0)

    assert guard.is_stale(rfc3339(NOW_S - 4.0, 3), NOW_S) is True
    assert guard.is_stale(rfc3339(NOW_S - 0.5, 3), NOW_S) is False


def test_guard_clock_stepped_back() -> None:
    guard = ReplayGuard(WINDOW_S)
    guard.is_stale(rfc3339(NOW_S, 3), NOW_S)
    stepped_back_s = NOW_S - 3600

    assert guard.is_stale(rfc3339(stepped_back_s - 1, 3), stepped_back_s) is False
