"""Conduit ownership: adopt the conduit at start, create a new one when it is lost.

Adoption order: the configured id, else the id stored in Redis, else the client's only conduit, else a
new conduit. With several conduits and no configured id the coordinator refuses to guess.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as redis

from common.errors import FleetError
from common.helix import HelixClient
from common.keys import Keys
from common.settings import Settings
from .fence import Fence

log = logging.getLogger(__name__)


class ConduitChoiceError(FleetError):
    """Raised when the conduit to adopt cannot be chosen without guessing."""


class ConduitManager:
    """Knows the fleet's conduit id and shard count, and replaces the conduit when Twitch lost it."""

    def __init__(self, settings: Settings, client: redis.Redis, helix: HelixClient, fence: Fence) -> None:
        self._settings = settings
        self._client = client
        self._helix = helix
        self._keys = Keys(settings.key_prefix)
        self._fence = fence
        self.conduit_id = ""
        self.shard_count = 0
        self.generation = 0
        self._lock = asyncio.Lock()
        self.on_replaced: list = []
        self.lost_at_adoption = ""  # the stored id that no longer existed when this leader adopted

    async def adopt(self) -> None:
        existing = {conduit.id: conduit for conduit in await self._helix.get_conduits()}
        stored = (await self._client.hget(self._keys.conduit, "id") or b"").decode()
        wanted = self._settings.conduit_id or stored
        if wanted:
            if wanted in existing:
                await self._record(existing[wanted].id, existing[wanted].shard_count, "adopted")
                return
            if self._settings.conduit_id:
                raise ConduitChoiceError(
                    f"conduit {wanted} from CF_CONDUIT_ID does not exist; existing conduits: {sorted(existing) or 'none'}")
            log.warning("stored conduit %s no longer exists", wanted, extra={"conduit_id": wanted})
            self.lost_at_adoption = wanted
        if not wanted and len(existing) == 1:
            only = next(iter(existing.values()))
            await self._record(only.id, only.shard_count, "adopted the client's only conduit")
            return
        if not wanted and len(existing) > 1:
            raise ConduitChoiceError(
                f"the client has {len(existing)} conduits ({', '.join(sorted(existing))}); "
                "set CF_CONDUIT_ID to the one this fleet should use")
        await self._create("created" if not wanted else "created to replace a lost conduit")

    async def replace_lost(self, lost_id: str) -> bool:
        """Create a new conduit if `lost_id` is still the current one; return whether one was created."""
        async with self._lock:
            if lost_id != self.conduit_id:
                return False
            log.error("conduit %s is lost (404 from Twitch); creating a new one", lost_id, extra={"conduit_id": lost_id})
            await self._create("created to replace a lost conduit")
        for callback in self.on_replaced:
            await callback(lost_id, self.conduit_id)
        return True

    async def resize(self, shard_count: int) -> None:
        conduit = await self._helix.update_conduit(self.conduit_id, shard_count)
        await self._record(conduit.id, conduit.shard_count, f"resized to {conduit.shard_count} shards")

    async def _create(self, how: str) -> None:
        conduit = await self._helix.create_conduit(self._settings.shard_count)
        await self._record(conduit.id, conduit.shard_count, how)

    async def _record(self, conduit_id: str, shard_count: int, how: str) -> None:
        if conduit_id != self.conduit_id:
            self.generation += 1
        self.conduit_id, self.shard_count = conduit_id, shard_count
        await self._fence.hash_update(self._keys.conduit, {
            "id": conduit_id, "shard_count": str(shard_count), "adopted_at_ms": str(int(time.time() * 1000)),
        })
        log.info("conduit %s %s with %d shards", conduit_id, how, shard_count, extra={"conduit_id": conduit_id})
