"""The worker's side of binding: enqueue an arq job, then wait for the leader's result.

The leader publishes each result on the worker's own pub/sub channel, which is faster than polling
arq for results; if that message is lost, the job's stored result is read once before giving up.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import msgspec
import redis.exceptions
from arq.connections import ArqRedis

from common.keys import Keys
from common.models import BindResult
from common.settings import Settings

log = logging.getLogger(__name__)

BIND_JOB = "bind_shard"
ENQUEUE_CONCURRENCY = 32
_result_decoder = msgspec.json.Decoder(BindResult)


class BindClient:
    """Requests binds from the leader and routes its results back to the waiting shard."""

    def __init__(self, settings: Settings, arq: ArqRedis, worker_id: str) -> None:
        self._settings = settings
        self._arq = arq
        self._worker_id = worker_id
        self._keys = Keys(settings.key_prefix)
        self._waiting: dict[tuple[str, str], asyncio.Future[BindResult]] = {}
        # arq enqueues each job in a WATCH transaction on a connection of its own, so a cold start
        # of hundreds of shards would exhaust the pool ("Too many connections") without a cap.
        self._enqueue_slots = asyncio.Semaphore(ENQUEUE_CONCURRENCY)
        self.epoch = 0

    def on_result(self, data: bytes) -> None:
        """Resolve the waiting bind with a result published by the leader."""
        try:
            result = _result_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("ignoring malformed bind result %r: %s", data[:200], exc)
            return
        future = self._waiting.get((result.shard_id, result.session_id))
        if future is not None and not future.done():
            future.set_result(result)

    async def bind(self, shard_id: str, session_id: str) -> BindResult:
        """Ask the leader to bind `session_id` to `shard_id`; return its result or a timeout failure."""
        key = (shard_id, session_id)
        future = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        # Twitch closes a session that is not bound within 10 s of its welcome (Handling conduit
        # events), so there is no point in waiting longer than that.
        timeout_s = self._settings.scaled(self._settings.bind_deadline_s)
        try:
            try:
                async with self._enqueue_slots:
                    job = await self._arq.enqueue_job(
                        BIND_JOB, shard_id, session_id, self._worker_id, self.epoch,
                        _job_id=f"bind:{shard_id}:{uuid.uuid4().hex}",
                        _queue_name=self._keys.arq_queue,
                        _expires=timeout_s,
                    )
            except (redis.exceptions.RedisError, OSError) as exc:
                return BindResult(shard_id, session_id, ok=False, error=f"enqueueing the bind job failed: {exc}")
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout_s)
            except asyncio.TimeoutError:
                stored = await self._stored_result(job)
                return stored or BindResult(shard_id, session_id, ok=False, error=f"no bind result within {timeout_s:.1f} s")
        finally:
            self._waiting.pop(key, None)

    async def _stored_result(self, job) -> BindResult | None:
        if job is None:
            return None
        try:
            info = await job.result_info()
        except Exception as exc:  # arq raises plain exceptions for missing or failed results
            log.debug("no stored bind result: %s", exc)
            return None
        if info is None or not info.success or not isinstance(info.result, (bytes, str)):
            return None
        return _result_decoder.decode(info.result)
