"""The coordinator's leader lease with a fencing epoch.

One coordinator holds `cf:leader` (SET NX PX) at a time; taking it over increments `cf:leader:epoch`,
and every leader write is fenced by that epoch, so a deposed leader that wakes up cannot overwrite
its successor. Standbys poll at a third of the renew interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
import redis.exceptions

from common.keys import Keys
from common.redisconn import Scripts
from common.settings import Settings

log = logging.getLogger(__name__)


class LeaderLease:
    """Acquires and renews the leader lease, calling back on election and deposition."""

    def __init__(self, settings: Settings, client: redis.Redis, owner_id: str) -> None:
        self._settings = settings
        self._client = client
        self._keys = Keys(settings.key_prefix)
        self._scripts = Scripts(client)
        self.owner_id = owner_id
        self.epoch = 0
        self.is_leader = False
        self._renewed_at_s = 0.0

    async def run(self, on_elected: Callable[[int], Awaitable[None]], on_deposed: Callable[[], Awaitable[None]]) -> None:
        lease_ms = int(self._settings.scaled(self._settings.leader_lease_s) * 1000)
        renew_s = self._settings.scaled(self._settings.leader_renew_s)
        while True:
            try:
                if self.is_leader:
                    renewed = await self._scripts.renew_leader(
                        keys=[self._keys.leader, self._keys.leader_epoch], args=[self.owner_id, lease_ms, self.epoch])
                    if renewed:
                        self._renewed_at_s = time.monotonic()
                    else:
                        await self._step_down("lease taken by another coordinator", on_deposed)
                else:
                    epoch = await self._scripts.acquire_leader(
                        keys=[self._keys.leader, self._keys.leader_epoch], args=[self.owner_id, lease_ms])
                    if epoch:
                        self.epoch, self.is_leader = int(epoch), True
                        self._renewed_at_s = time.monotonic()
                        log.info("elected leader", extra={"epoch": self.epoch})
                        await on_elected(self.epoch)
            except (redis.exceptions.RedisError, OSError) as exc:
                if asyncio.current_task().cancelling():
                    # redis-py can turn a cancellation inside a command into a connection error.
                    raise asyncio.CancelledError from exc
                log.warning("leader lease check failed: %s", exc, extra={"epoch": self.epoch})
                if self.is_leader and time.monotonic() - self._renewed_at_s > lease_ms / 1000:
                    await self._step_down("could not renew the lease in time", on_deposed)
            await asyncio.sleep(renew_s if self.is_leader else renew_s / 3)

    async def _step_down(self, reason: str, on_deposed: Callable[[], Awaitable[None]]) -> None:
        log.warning("stepping down: %s", reason, extra={"epoch": self.epoch})
        self.is_leader = False
        await on_deposed()

    async def release(self) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            await self._scripts.release_leader(
                keys=[self._keys.leader, self._keys.leader_epoch], args=[self.owner_id, self.epoch])
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("could not release the lease: %s", exc)
