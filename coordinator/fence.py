"""Epoch-fenced writes: every write of the leader checks, in Lua, that its epoch is still current."""

from __future__ import annotations

import redis.asyncio as redis
import redis.exceptions

from common.errors import FleetError
from common.keys import Keys
from common.redisconn import Scripts


class Deposed(FleetError):
    """Raised when a write carries an epoch older than the current one: another leader took over."""


class Fence:
    """Writes to Redis hashes on behalf of the leader of one epoch."""

    def __init__(self, client: redis.Redis, keys: Keys, epoch: int) -> None:
        self._client = client
        self._keys = keys
        self._scripts = Scripts(client)
        self.epoch = epoch

    async def hash_update(
        self, key: str, values: dict[str, str | bytes] | None = None, delete: list[str] | None = None,
        *, channel: str = "",
    ) -> None:
        """Set and delete hash fields if the epoch is still current, then publish on `channel`."""
        values = values or {}
        args: list = [self.epoch, channel, len(values)]
        for field, value in values.items():
            args.append(field)
            args.append(value)
        args.extend(delete or ())
        try:
            await self._scripts.fenced_hash_update(keys=[self._keys.leader_epoch, key], args=args)
        except redis.exceptions.ResponseError as exc:
            if "STALE_EPOCH" in str(exc):
                raise Deposed(f"write with epoch {self.epoch} rejected: {exc}") from exc
            raise
