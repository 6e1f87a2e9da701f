"""Bind jobs: the leader batches them into Update Conduit Shards calls.

Workers enqueue one arq job per welcomed session. Jobs arriving within the batch window (50 ms by
default) share one call, because Twitch gives a session only 10 s from its welcome to be bound
(Handling conduit events). Update Conduit Shards succeeds partially: only the shards listed in `data`
are bound, and any shard in `errors` (or missing from both) failed; a 404 means the conduit is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import redis.asyncio as redis
from prometheus_client import Counter, Histogram

from common.errors import ConduitNotFound, FleetError
from common.helix import HelixClient
from common.keys import Keys
from common.models import BindResult, ShardState, ShardTransport, ShardUpdate
from common.settings import Settings
from .conduit import ConduitManager
from .fence import Fence

log = logging.getLogger(__name__)

BIND_RESULTS = Counter("cf_binds_total", "Bind jobs answered by the leader, by result", ["result"])
UPDATE_CALLS = Counter("cf_update_shards_calls_total", "Update Conduit Shards calls made")
UPDATE_DURATION = Histogram(
    "cf_update_shards_duration_seconds", "Duration of Update Conduit Shards calls, retries included",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
BATCH_SIZE = Histogram("cf_bind_batch_size", "Shards per Update Conduit Shards call", buckets=(1, 2, 5, 10, 20, 50, 100, 200))

_encoder = msgspec.json.Encoder()


class _Pending(msgspec.Struct):
    shard_id: str
    session_id: str
    worker_id: str
    future: asyncio.Future


class BindBatcher:
    """Collects bind requests for a short window and resolves them all with one Helix call."""

    def __init__(self, settings: Settings, client: redis.Redis, helix: HelixClient,
                 conduit: ConduitManager, fence: Fence) -> None:
        self._settings = settings
        self._client = client
        self._helix = helix
        self._conduit = conduit
        self._fence = fence
        self._keys = Keys(settings.key_prefix)
        self._pending: list[_Pending] = []
        self._timer: asyncio.Task | None = None
        self.calls = 0
        self.on_bound: list = []  # callables run after binds are recorded (the assignment loop's wake-up)

    async def submit(self, shard_id: str, session_id: str, worker_id: str) -> BindResult:
        owner = await self._client.hget(self._keys.assignment, shard_id)
        if owner is None or owner.decode() != worker_id:
            holder = owner.decode() if owner else "nobody"
            BIND_RESULTS.labels("not_owner").inc()
            return BindResult(shard_id, session_id, ok=False, error=f"shard {shard_id} is assigned to {holder}")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(shard_id, session_id, worker_id, future))
        if len(self._pending) >= self._settings.bind_batch_max:
            self._flush_now()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_after_window(), name="bind batch timer")
        return await future

    async def _flush_after_window(self) -> None:
        await asyncio.sleep(self._settings.bind_batch_window_ms / 1000)
        self._timer = None
        self._flush_now()

    def _flush_now(self) -> None:
        batch, self._pending = self._pending[: self._settings.bind_batch_max], self._pending[self._settings.bind_batch_max:]
        if self._pending and self._timer is None:
            self._timer = asyncio.create_task(self._flush_after_window(), name="bind batch timer")
        if batch:
            asyncio.create_task(self._bind_batch(batch), name="bind batch")

    async def _bind_batch(self, batch: list[_Pending]) -> None:
        # Two sessions for one shard in the same batch: the newest wins, the older one is superseded.
        latest: dict[str, _Pending] = {}
        for item in batch:
            previous = latest.get(item.shard_id)
            if previous is not None:
                _answer(previous, False, "superseded by a newer session for the same shard")
            latest[item.shard_id] = item
        items = list(latest.values())
        conduit_id = self._conduit.conduit_id
        updates = [ShardUpdate(id=i.shard_id, transport=ShardTransport(method="websocket", session_id=i.session_id)) for i in items]
        self.calls += 1
        UPDATE_CALLS.inc()
        BATCH_SIZE.observe(len(items))
        try:
            with UPDATE_DURATION.time():
                response = await self._helix.update_shards(conduit_id, updates)
        except ConduitNotFound as exc:
            for item in items:
                _answer(item, False, f"conduit {conduit_id} not found", conduit_lost=True)
            asyncio.create_task(self._conduit.replace_lost(conduit_id), name="replace lost conduit")
            log.error("Update Conduit Shards: %s", exc, extra={"conduit_id": conduit_id})
            return
        except (FleetError, OSError, asyncio.TimeoutError) as exc:
            for item in items:
                _answer(item, False, f"Update Conduit Shards failed: {exc}")
            log.warning("Update Conduit Shards failed for %d shards: %s", len(items), exc)
            return
        await self._record(items, response)

    async def _record(self, items: list[_Pending], response) -> None:
        bound = {shard.id: shard for shard in response.data}
        errors = {error.id: error for error in response.errors}
        now_ms = int(time.time() * 1000)
        states: dict[str, bytes] = {}
        for item in items:
            shard = bound.get(item.shard_id)
            session_matches = shard is not None and shard.transport is not None and shard.transport.session_id == item.session_id
            if shard is not None and (shard.transport is None or session_matches):
                states[item.shard_id] = _encoder.encode(ShardState(
                    worker=item.worker_id, session_id=item.session_id, status="enabled",
                    epoch=self._fence.epoch, bound_at_ms=now_ms, changed_at_ms=now_ms))
                continue
            error = errors.get(item.shard_id)
            reason = f"{error.code or 'error'}: {error.message}" if error else "not confirmed by Update Conduit Shards"
            _answer(item, False, reason)
            log.warning("bind of shard %s failed: %s", item.shard_id, reason,
                        extra={"shard_id": item.shard_id, "session_id": item.session_id, "worker_id": item.worker_id})
        if states:
            try:
                await self._fence.hash_update(self._keys.shards, states)
            except Exception as exc:
                for item in items:
                    _answer(item, False, f"recording the bind failed: {exc}")
                raise
        for item in items:
            _answer(item, True, "")
        for callback in self.on_bound:
            callback()


def _answer(item: _Pending, ok: bool, error: str, *, conduit_lost: bool = False) -> None:
    if item.future.done():
        return
    BIND_RESULTS.labels("ok" if ok else "failed").inc()
    item.future.set_result(BindResult(item.shard_id, item.session_id, ok=ok, error=error, conduit_lost=conduit_lost))


async def bind_shard(ctx: dict, shard_id: str, session_id: str, worker_id: str, epoch: int = 0) -> bytes:
    """Bind one session to one shard (an arq job) and publish the result on the worker's channel."""
    batcher: BindBatcher = ctx["batcher"]
    keys: Keys = ctx["keys"]
    result = await batcher.submit(shard_id, session_id, worker_id)
    encoded = _encoder.encode(result)
    await ctx["control_redis"].publish(keys.bind_results_channel(worker_id), encoded)
    return encoded
