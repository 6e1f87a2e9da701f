"""A leader's Helix stack in the test process: token manager, shared rate limiter, Helix client,
conduit and reconciler, aimed at an in-process emulator and the real Redis."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import redis.asyncio as redis

from common.channels import ChannelStore, EntryState, EntryStateStore, make_channel
from common.helix import HelixClient
from common.keys import Keys
from common.ratelimit import RateLimiter
from common.token import AppTokenManager
from coordinator.conduit import ConduitManager
from coordinator.fence import Fence
from coordinator.reconciler import Reconciler


class ReconcileHarness:
    """The objects a leading coordinator builds, plus helpers to drive the emulator."""

    def __init__(self, base_url: str, settings, client: redis.Redis, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.settings = settings
        self.redis = client
        self.http = http
        self.keys = Keys(settings.key_prefix)
        self.tokens = AppTokenManager(settings, client, http)
        self.limiter = RateLimiter(client, self.keys, time_scale=settings.time_scale)
        self.helix = HelixClient(settings, self.tokens, http, limiter=self.limiter)
        self.conduit = ConduitManager(settings, client, self.helix, Fence(client, self.keys, 1))
        self.reconciler = Reconciler(settings, client, self.helix, self.conduit)
        self.channels = ChannelStore(client, self.keys)
        self.states = EntryStateStore(client, self.keys)

    async def start(self) -> None:
        await self.redis.set(self.keys.leader_epoch, 1)
        await self.conduit.adopt()

    async def add_channels(self, ids: list[str], types: list[str]) -> None:
        await self.channels.add(make_channel(broadcaster_id, types=types) for broadcaster_id in ids)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.base_url}/_emulator{path}", json=body) as response:
            raw = await response.read()
            assert response.status < 300, raw
            return orjson.loads(raw) if raw else None

    async def twitch_subscriptions(self, **filters: str) -> list[dict]:
        subs, _ = await self.helix.get_subscriptions(**filters)
        return [orjson.loads(orjson.dumps({"id": s.id, "type": s.type, "status": s.status,
                                           "condition": s.condition})) for s in subs]

    async def helix_calls(self, key: str) -> int:
        counters = await self.control("GET", "/counters")
        return int(counters["helix_calls"].get(key, 0))

    async def entry_states(self) -> dict[str, EntryState]:
        return await self.states.load()

    async def alerts(self) -> list[dict[str, str]]:
        return [{k.decode(): v.decode() for k, v in fields.items()}
                for _, fields in await self.redis.xrange(self.keys.alerts)]

    async def progress(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.reconcile)
        return {k.decode(): v.decode() for k, v in raw.items()}


async def make_harness(start_emulator, client: redis.Redis, http: aiohttp.ClientSession, *,
                       fleet: dict[str, Any] | None = None, **emulator_settings: Any) -> ReconcileHarness:
    """Start an emulator with `emulator_settings` and a harness whose settings `fleet` overrides."""
    emulator = await start_emulator(**emulator_settings)
    settings = emulator.fleet_settings(time_scale=emulator.settings.time_scale, **(fleet or {}))
    harness = ReconcileHarness(emulator.base_url, settings, client, http)
    await harness.start()
    return harness
