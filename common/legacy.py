"""The legacy WebSocket mode's capacity: which connection (slot) carries each channel.

Twitch's plain WebSocket transport allows 3 connections with enabled subscriptions per client and user,
and 300 enabled subscriptions per connection (Handling WebSocket events). Each channel in the
`websocket` or `both` mode is placed on one slot, with all its event types, and a new channel goes to
the least-loaded slot with room. Placements live in `cf:legacy:slots` (broadcaster id ->
"slot:subscriptions") and the per-slot totals in `cf:legacy:load`; one Lua script changes both, so
two editors cannot overfill a slot.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as redis
import redis.exceptions

from .errors import FleetError
from .keys import Keys
from .settings import Settings

# KEYS: slots hash, load hash. ARGV: subscriptions per slot, slot count, then pairs of broadcaster id
# and subscription count (0 releases the channel's place).
# Places everything or nothing: on the first channel that fits nowhere it returns an error naming it.
PLACE_CHANNELS = """
local per_slot = tonumber(ARGV[1])
local slot_count = tonumber(ARGV[2])
local load = {}
for slot = 0, slot_count - 1 do
  load[slot] = tonumber(redis.call('HGET', KEYS[2], tostring(slot)) or '0')
end
local pairs_count = (#ARGV - 2) / 2
local previous = {}
for i = 0, pairs_count - 1 do
  local broadcaster = ARGV[3 + i * 2]
  local stored = redis.call('HGET', KEYS[1], broadcaster)
  if stored then
    local slot, count = string.match(stored, '^(%d+):(%d+)$')
    slot, count = tonumber(slot), tonumber(count)
    previous[broadcaster] = slot
    if load[slot] then load[slot] = load[slot] - count end
  end
end
local placed = {}
for i = 0, pairs_count - 1 do
  local broadcaster = ARGV[3 + i * 2]
  local count = tonumber(ARGV[4 + i * 2])
  local chosen = -1
  if count > 0 then
    local old = previous[broadcaster]
    if old and load[old] and load[old] + count <= per_slot then
      chosen = old
    else
      for slot = 0, slot_count - 1 do
        if load[slot] + count <= per_slot and (chosen < 0 or load[slot] < load[chosen]) then chosen = slot end
      end
    end
    if chosen < 0 then
      local used = 0
      for slot = 0, slot_count - 1 do used = used + load[slot] end
      return redis.error_reply('LEGACY_FULL ' .. broadcaster .. ' ' .. count .. ' ' .. used)
    end
    load[chosen] = load[chosen] + count
  end
  placed[#placed + 1] = chosen
end
for i = 0, pairs_count - 1 do
  local broadcaster = ARGV[3 + i * 2]
  local count = tonumber(ARGV[4 + i * 2])
  if placed[i + 1] >= 0 then
    redis.call('HSET', KEYS[1], broadcaster, placed[i + 1] .. ':' .. count)
  else
    redis.call('HDEL', KEYS[1], broadcaster)
  end
end
for slot = 0, slot_count - 1 do redis.call('HSET', KEYS[2], tostring(slot), load[slot]) end
return placed
"""


class LegacyCapacityError(FleetError, ValueError):
    """Raised when channels do not fit in the legacy connections; nothing was changed."""


def slot_name(slot: int) -> str:
    """Return the name a legacy connection goes by in logs, stream entries and the dashboard."""
    return f"legacy-{slot}"


class LegacySlots:
    """Places channels on legacy connections and reads the placements."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self._client = client
        self._keys = keys
        self._settings = settings
        self._place = client.register_script(PLACE_CHANNELS)

    async def place(self, counts: dict[str, int]) -> dict[str, int]:
        """Give each broadcaster a slot for its subscription count (0 releases it); return id -> slot (-1)."""
        if not counts:
            return {}
        settings = self._settings
        args: list = [settings.legacy_subscriptions_per_connection, settings.legacy_connections]
        for broadcaster, count in counts.items():
            args += [broadcaster, count]
        try:
            placed = await self._place(keys=[self._keys.legacy_slots, self._keys.legacy_load], args=args)
        except redis.exceptions.ResponseError as exc:
            if "LEGACY_FULL" not in str(exc):
                raise
            broadcaster, count, used = str(exc).split("LEGACY_FULL", 1)[1].split()[:3]
            raise LegacyCapacityError(
                f"channel {broadcaster} does not fit in the legacy WebSocket connections: it needs {count} "
                f"subscription(s) and {used} of {settings.legacy_capacity} are in use "
                f"({settings.legacy_connections} connections x {settings.legacy_subscriptions_per_connection}, "
                "CF_LEGACY_CONNECTIONS and CF_LEGACY_SUBSCRIPTIONS_PER_CONNECTION). Keep it on the conduit "
                "(transport mode conduit) or move another legacy channel to the conduit first.") from None
        return dict(zip(counts, (int(slot) for slot in placed)))

    async def release(self, broadcaster_ids: Iterable[str]) -> None:
        await self.place({broadcaster: 0 for broadcaster in broadcaster_ids})

    async def placements(self) -> dict[str, tuple[int, int]]:
        """Return broadcaster id -> (slot, subscriptions)."""
        raw = await self._client.hgetall(self._keys.legacy_slots)
        result = {}
        for broadcaster, value in raw.items():
            slot, _, count = value.decode().partition(":")
            result[broadcaster.decode()] = (int(slot), int(count))
        return result

    async def load(self) -> dict[int, int]:
        """Return slot -> placed subscriptions, for every configured slot."""
        raw = await self._client.hgetall(self._keys.legacy_load)
        stored = {int(slot): int(count) for slot, count in raw.items()}
        return {slot: stored.get(slot, 0) for slot in range(self._settings.legacy_connections)}
