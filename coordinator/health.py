"""Shard health: poll Get Conduit Shards, record each shard's status, repair disabled shards.

A shard that Twitch keeps reporting as not enabled gets its session reset by its worker, which opens
a fresh session and binds it. Unknown statuses are read as "not enabled"
and logged once per value.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import redis.asyncio as redis
from redis.exceptions import RedisError

from common.errors import ConduitNotFound, FleetError
from common.helix import HelixClient
from common.keys import Keys
from common.models import SHARD_STATUSES, ShardState, is_enabled
from common.settings import Settings
from .conduit import ConduitManager
from .fence import Fence

log = logging.getLogger(__name__)

_state_decoder = msgspec.json.Decoder(ShardState)
_encoder = msgspec.json.Encoder()


class ShardHealth:
    """Polls shard statuses and tells the owning worker to reset each shard that Twitch lists as disabled."""

    def __init__(self, settings: Settings, client: redis.Redis, helix: HelixClient,
                 conduit: ConduitManager, fence: Fence) -> None:
        self._settings = settings
        self._client = client
        self._helix = helix
        self._conduit = conduit
        self._fence = fence
        self._keys = Keys(settings.key_prefix)
        self._unknown_statuses: set[str] = set()
        self.repairs = 0
        self._disabled_since_ms: dict[str, int] = {}
        self.poll_now = asyncio.Event()

    async def run(self) -> None:
        interval_s = self._settings.scaled(self._settings.shard_health_poll_s)
        while True:
            try:
                await asyncio.wait_for(self.poll_now.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
            self.poll_now.clear()
            try:
                await self.poll_once()
            except ConduitNotFound:
                await self._conduit.replace_lost(self._conduit.conduit_id)
            except (FleetError, RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("shard health poll failed: %s", exc)

    async def poll_once(self) -> dict[str, str]:
        shards = await self._helix.get_shards(self._conduit.conduit_id)
        recorded = await self._client.hgetall(self._keys.shards)
        assignment = await self._client.hgetall(self._keys.assignment)
        now_ms = int(time.time() * 1000)
        grace_ms = int(self._settings.scaled(self._settings.bind_deadline_s) * 2000)
        updates: dict[str, bytes] = {}
        statuses: dict[str, str] = {}
        for shard in shards:
            statuses[shard.id] = shard.status
            if shard.status not in SHARD_STATUSES and shard.status not in self._unknown_statuses:
                self._unknown_statuses.add(shard.status)
                log.warning("unknown shard status %r (treated as not enabled; logged once)", shard.status)
            raw = recorded.get(shard.id.encode())
            state = _state_decoder.decode(raw) if raw else ShardState()
            session_id = shard.transport.session_id if shard.transport and shard.transport.session_id else state.session_id
            if state.status != shard.status or state.session_id != session_id:
                changed = msgspec.structs.replace(state, status=shard.status, session_id=session_id or "", changed_at_ms=now_ms)
                updates[shard.id] = _encoder.encode(changed)
            owner = assignment.get(shard.id.encode())
            if is_enabled(shard.status) or not owner:
                self._disabled_since_ms.pop(shard.id, None)
                continue
            # A shard being bound right now is briefly disabled: repair only what stays disabled
            # for longer than two bind deadlines, and at most once per such period.
            since_ms = self._disabled_since_ms.setdefault(shard.id, now_ms)
            if since_ms == now_ms:
                asyncio.get_running_loop().call_later(grace_ms / 1000, self.poll_now.set)  # look again soon
            elif now_ms - since_ms >= grace_ms:
                self._disabled_since_ms[shard.id] = now_ms
                self.repairs += 1
                log.warning("shard %s is %s at Twitch; asking its worker for a fresh session", shard.id, shard.status,
                            extra={"shard_id": shard.id, "worker_id": owner.decode()})
                await self._client.publish(self._keys.worker_commands_channel(owner.decode()), f"reset:{shard.id}")
        if updates:
            await self._fence.hash_update(self._keys.shards, updates)
        return statuses
