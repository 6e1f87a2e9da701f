"""Text rendering of the reconciler's progress (`cf:reconcile`) for `conduit-fleet channels progress`."""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as redis

from .keys import Keys

BAR_WIDTH = 30
FINISHED_STATES = ("done", "paused")


def format_progress(fields: dict[str, str]) -> str:
    """Return one line: state, done/total, failures, rate and ETA; or a hint when nothing ran yet."""
    if not fields:
        return "no reconciliation has run yet: is a coordinator leading?"
    total = int(fields.get("to_create", 0))
    done = int(fields.get("done", 0))
    eta_s = float(fields.get("eta_s", -1))
    eta = "unknown" if eta_s < 0 else f"{eta_s:.0f} s"
    line = (f"run {fields.get('run', '?')} {fields.get('state', '?')}: {done}/{total} done "
            f"({fields.get('created', 0)} created, {fields.get('exists', 0)} existed), "
            f"{fields.get('failed', 0)} failed, {fields.get('blocked_by_cost', 0)} blocked by cost, "
            f"{fields.get('needs_reconsent', 0)} need re-consent, {fields.get('remaining', 0)} remaining, "
            f"{fields.get('rate_per_s', '0')}/s, ETA {eta}")
    if fields.get("error"):
        line += f"; paused: {fields['error']}"
    return line


def render_bar(fields: dict[str, str]) -> str:
    """Return a one-line bar such as `[#####.....]  50.0% 500/1000 ...`."""
    total = int(fields.get("to_create", 0))
    done = int(fields.get("done", 0))
    ratio = done / total if total else 1.0
    filled = int(ratio * BAR_WIDTH)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {ratio * 100:5.1f}% {format_progress(fields)}"


async def watch_progress(client: redis.Redis, keys: Keys, interval_s: float) -> None:
    """Redraw the bar on the terminal until the current pass is done or paused."""
    while True:
        raw = await client.hgetall(keys.reconcile)
        fields = {key.decode(): value.decode() for key, value in raw.items()}
        sys.stdout.write("\r\x1b[2K" + (render_bar(fields) if fields else format_progress(fields)))
        sys.stdout.flush()
        if not fields or fields.get("state") in FINISHED_STATES:
            sys.stdout.write("\n")
            return
        await asyncio.sleep(interval_s)
