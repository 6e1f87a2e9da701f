"""The migration's stored state, its command queue and its status report.

The leader's controller (`coordinator.migration`) is the only writer of the state document in
`cf:migration` (field `state`). Operators act through commands: the CLI and the HTTP API push them
onto `cf:migration:commands` and wait for the controller's response in `cf:migration:result:<id>`, so a
command never races a batch the controller is moving.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import redis.asyncio as redis

from .keys import Keys
from .legacy import LegacySlots
from .models import Channel
from .settings import Settings

COMMANDS = ("start", "pause", "resume", "rollback")
TRANSPORTS = ("conduit", "websocket")
HISTORY_LIMIT = 200


class MigrationState(msgspec.Struct, omit_defaults=False):
    """The controller's progress. `phase` is 1-based (0 before the first start)."""

    status: str = "not_started"  # not_started | running | paused | completed
    phase: int = 0
    stop_after_phase: int = 0  # 0: run through the last phase
    step: str = "idle"  # idle | warming | soaking
    batch: list[str] = []
    batch_number: int = 0
    batch_started_ms: int = 0
    batch_ready_ms: int = 0
    soak_started_ms: int = 0
    baseline: dict[str, float] = {}
    paused_reason: str = ""
    paused_reason_ja: str = ""
    started_at_ms: int = 0
    updated_at_ms: int = 0
    rollback: dict = {}
    fallback: dict = {}
    helix_consecutive_failures: int = 0
    history: list[dict] = []


_state_decoder = msgspec.json.Decoder(MigrationState)
_channel_decoder = msgspec.json.Decoder(Channel)


class MigrationError(ValueError):
    """Raised for a command the controller rejected; the message gives the reason and what to do."""


def _keys(settings: Settings) -> Keys:
    return Keys(settings.key_prefix)


async def load_state(client: redis.Redis, keys: Keys) -> MigrationState:
    raw = await client.hget(keys.migration, "state")
    return _state_decoder.decode(raw) if raw else MigrationState()


async def save_state(client: redis.Redis, keys: Keys, state: MigrationState) -> None:
    state.updated_at_ms = int(time.time() * 1000)
    del state.history[:-HISTORY_LIMIT]
    await client.hset(keys.migration, "state", msgspec.json.encode(state))


async def send_command(client: redis.Redis, settings: Settings, command: str, *, phase: int = 0,
                       all_channels: bool = False, timeout_s: float = 30.0) -> dict:
    """Queue a command for the leader's controller and wait for its response.

    Returns the response (`ok`, `message`). Raises MigrationError when the controller rejected the
    command, and TimeoutError when no leader responded within `timeout_s` (the command stays queued).
    """
    if command not in COMMANDS:
        raise MigrationError(f"unknown migration command {command!r}: expected one of {', '.join(COMMANDS)}")
    if phase and not 1 <= phase <= len(settings.phase_targets):
        raise MigrationError(f"invalid phase {phase}: expected 1 to {len(settings.phase_targets)} "
                             f"(CF_MIGRATION_PHASES={settings.migration_phases})")
    keys = _keys(settings)
    command_id = uuid.uuid4().hex[:12]
    body = {"id": command_id, "command": command, "phase": phase, "all": all_channels, "at_ms": int(time.time() * 1000)}
    await client.rpush(keys.migration_commands, msgspec.json.encode(body))
    await client.publish(keys.migration_channel, command)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = await client.get(keys.migration_result(command_id))
        if raw:
            answer = msgspec.json.decode(raw)
            if not answer.get("ok"):
                raise MigrationError(answer.get("message", "the controller rejected the command"))
            return answer
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no coordinator leader responded to the {command!r} command within {timeout_s:.0f} s; it stays "
                       "queued and runs when a leader is elected. Check `conduit-fleet status`.")


def _soak_remaining_s(state: MigrationState, settings: Settings, now_ms: int) -> float:
    """Return the real seconds left in the current soak (0 when no batch is soaking)."""
    if state.step != "soaking" or not state.soak_started_ms:
        return 0.0
    ends_ms = state.soak_started_ms + settings.scaled(settings.migration_soak_s) * 1000
    return max(0.0, (ends_ms - now_ms) / 1000)


def summarize(totals: dict[str, float], baseline: dict[str, float] | None = None) -> dict:
    """Return per-transport figures for the events settled since `baseline` (all of them without one)."""
    base = baseline or {}

    def delta(name: str) -> float:
        return float(totals.get(name, 0)) - float(base.get(name, 0))

    compared = delta("compared")
    result: dict = {"compared": int(compared), "transports": {}}
    for transport in TRANSPORTS:
        count = delta(f"latency_count:{transport}")
        missed = delta(f"missed:{transport}")
        result["transports"][transport] = {
            "seen": int(delta(f"seen:{transport}")),
            "missed": int(missed),
            "loss_ratio": round(missed / compared, 4) if compared else 0.0,
            "mean_latency_ms": round(delta(f"latency_sum_ms:{transport}") / count, 1) if count else None,
        }
    return result


async def mode_counts(client: redis.Redis, keys: Keys) -> dict[str, int]:
    counts = {"websocket": 0, "both": 0, "conduit": 0, "fallback": 0, "total": 0}
    async for _, raw in client.hscan_iter(keys.channels, count=1000):
        channel = _channel_decoder.decode(raw)
        counts[channel.transport_mode] = counts.get(channel.transport_mode, 0) + 1
        counts["fallback"] += int(channel.fallback)
        counts["total"] += 1
    return counts


async def status_report(client: redis.Redis, settings: Settings, events: redis.Redis | None = None) -> dict:
    """Return everything `migrate status`, `/api/migration` and the dashboard show.

    `events` is the Redis of the event streams and their counters; None means `client`.
    """
    keys = _keys(settings)
    state = await load_state(client, keys)
    counts = await mode_counts(client, keys)
    raw_totals = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.compare)).items()}
    totals = {k: float(v) for k, v in raw_totals.items() if not k.startswith("cursor:")}
    now_ms = int(time.time() * 1000)
    hour_ms = int(settings.scaled(3600) * 1000)
    connections = []
    for slot, raw in sorted((await client.hgetall(keys.legacy_connections)).items()):
        connections.append(msgspec.json.decode(raw))
    slots = LegacySlots(client, keys, settings)
    load = await slots.load()
    comparison = {"all_time": summarize(totals), "current_batch": summarize(totals, state.baseline) if state.baseline else None}
    for transport in TRANSPORTS:
        disconnects = await client.zcount(keys.disconnects(transport), now_ms - hour_ms, "+inf")
        streak = (state.helix_consecutive_failures if transport == "conduit"
                  else max((c.get("helix_consecutive_failures", 0) for c in connections), default=0))
        for section in comparison.values():
            if section is None:
                continue
            figures = section["transports"][transport]
            figures["p95_latency_ms"] = totals.get(f"p95_ms:{transport}", 0.0)
            figures["disconnects_last_hour"] = disconnects
            figures["helix_failure_streak"] = streak
    # The second copies of the parallel run's events, dropped by the publish script, per transport.
    duplicates = {transport: 0 for transport in TRANSPORTS}
    for partition in range(settings.stream_partitions):
        counters = await (events or client).hgetall(keys.counters(partition))
        for transport in TRANSPORTS:
            duplicates[transport] += int(counters.get(f"duplicates_{transport}".encode(), 0))
    comparison["copies_dropped"] = duplicates
    phases = settings.phase_targets
    return {
        "status": state.status,
        "phase": state.phase,
        "phase_target_percent": phases[state.phase - 1] if 0 < state.phase <= len(phases) else 0,
        "phases": phases,
        "stop_after_phase": state.stop_after_phase,
        "step": state.step,
        "batch": {"number": state.batch_number, "channels": len(state.batch), "ids": state.batch[:100],
                  "started_at_ms": state.batch_started_ms, "soak_started_at_ms": state.soak_started_ms,
                  "soak_seconds": settings.migration_soak_s,
                  "soak_remaining_s": _soak_remaining_s(state, settings, now_ms)},
        "paused_reason": state.paused_reason,
        "paused_reason_ja": state.paused_reason_ja,
        "rollback": state.rollback,
        "fallback": state.fallback,
        "channels": counts,
        "conduit_percent": round(100 * counts["conduit"] / counts["total"], 1) if counts["total"] else 0.0,
        "legacy": {"capacity": settings.legacy_capacity, "used": sum(load.values()), "load": load,
                   "per_connection": settings.legacy_subscriptions_per_connection, "connections": connections},
        "comparison": comparison,
        "history": state.history[-20:],
        "updated_at_ms": state.updated_at_ms,
    }
