"""The coordinator process: leader election, leader-only loops, and the HTTP API on every replica."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

import aiohttp
import msgspec
import redis.asyncio as redis
import redis.exceptions
from aiohttp import web
from arq import Worker as ArqWorker

from common.errors import FleetError
from common.helix import HelixClient
from common.keys import Keys
from common.ratelimit import RateLimiter
from common.redisconn import arq_redis, control_redis, events_redis
from common.settings import Settings
from common.tasks import cancel_and_wait
from common.token import AppTokenManager
from common.alerts import Alerts, WebhookNotifier
from .assignment import AssignmentLoop
from .binder import BindBatcher, bind_shard
from .conduit import ConduitManager
from .fence import Deposed, Fence
from .health import ShardHealth
from .http import create_api
from .leader import LeaderLease
from .migration import MigrationController
from .monitor import Monitor
from .reconciler import Reconciler
from .stats import StatsPublisher

log = logging.getLogger(__name__)


class Coordinator:
    """One coordinator replica; only the elected leader runs the control loops."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.owner_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._leader_tasks: list[asyncio.Task] = []
        self._arq_worker: ArqWorker | None = None
        self.conduit: ConduitManager | None = None
        self.reconciler: Reconciler | None = None
        self.assignment: AssignmentLoop | None = None
        self.batcher: BindBatcher | None = None

    async def start(self) -> None:
        settings = self.settings
        self.redis = control_redis(settings)
        self.events = events_redis(settings)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.webhook = WebhookNotifier(settings.alert_webhook_url, self.http) if settings.alert_webhook_url else None
        if self.webhook is not None:
            self.webhook.start()
        self.tokens = AppTokenManager(settings, self.redis, self.http, alerts=Alerts(self.redis, self.keys, self.webhook))
        self.limiter = RateLimiter(self.redis, self.keys, time_scale=settings.time_scale)
        self.helix = HelixClient(settings, self.tokens, self.http, limiter=self.limiter)
        self.lease = LeaderLease(settings, self.redis, self.owner_id)
        app = create_api(settings, self.redis, self.status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.http_host, settings.http_port)
        await site.start()
        self.http_port = self._runner.addresses[0][1] if self._runner.addresses else settings.http_port
        self._lease_task = asyncio.create_task(self.lease.run(self._on_elected, self._on_deposed), name="leader lease")
        log.info("coordinator %s started; HTTP API on %s:%s", self.owner_id, settings.http_host, self.http_port)

    def status(self) -> dict:
        return {
            "coordinator": self.owner_id,
            "leader": self.lease.is_leader,
            "epoch": self.lease.epoch,
            "conduit_id": self.conduit.conduit_id if self.conduit else "",
        }

    async def close(self) -> None:
        await cancel_and_wait([self._lease_task])
        await self._stop_leading()
        await self.lease.release()
        await self._runner.cleanup()
        if self.webhook is not None:
            await self.webhook.close()
        await self.http.close()
        await self.redis.aclose()
        await self.events.aclose()
        log.info("coordinator %s stopped", self.owner_id)

    # -- leadership -------------------------------------------------------------------------------

    async def _on_elected(self, epoch: int) -> None:
        fence = Fence(self.redis, self.keys, epoch)
        self.conduit = ConduitManager(self.settings, self.redis, self.helix, fence)
        self._leader_tasks.append(asyncio.create_task(self._lead(fence), name="leader"))

    async def _on_deposed(self) -> None:
        await self._stop_leading()

    async def _lead(self, fence: Fence) -> None:
        settings = self.settings
        self._fence = fence
        self._resize_wanted = asyncio.Event()
        try:
            await self._adopt_conduit()
            self.alerts = Alerts(self.redis, self.keys, self.webhook)
            self.assignment = AssignmentLoop(settings, self.redis, fence, self.conduit.shard_count)
            self.reconciler = Reconciler(settings, self.redis, self.helix, self.conduit, self.alerts)
            self.batcher = BindBatcher(settings, self.redis, self.helix, self.conduit, fence)
            self.health = ShardHealth(settings, self.redis, self.helix, self.conduit, fence)
            self.stats = StatsPublisher(settings, self.redis, self.conduit, self.reconciler)
            self.monitor = Monitor(settings, self.redis, self.events, self.alerts, self.helix, self.tokens,
                                   self.conduit, self.assignment, self.reconciler)
            self.migration = MigrationController(settings, self.redis, self.events, self.helix, self.alerts)
            self.conduit.on_replaced.append(self._conduit_replaced)
            self.batcher.on_bound.append(self.assignment.changed.set)
            if self.conduit.lost_at_adoption:
                await self._conduit_replaced(self.conduit.lost_at_adoption, self.conduit.conduit_id)
            # arq's Worker.close() closes its pool, so each term of leadership gets its own.
            arq_pool = arq_redis(settings, self.keys.arq_queue)
            self._arq_worker = ArqWorker(
                functions=[bind_shard], redis_pool=arq_pool, queue_name=self.keys.arq_queue,
                handle_signals=False, max_jobs=2000, poll_delay=0.02, job_timeout=30, keep_result=60,
                max_tries=1, ctx={"batcher": self.batcher, "keys": self.keys, "control_redis": self.redis},
            )
            loops = [
                (self.assignment.run(), "assignment"),
                (self.reconciler.run(), "reconciler"),
                (self.health.run(), "shard health"),
                (self.stats.run(), "stats"),
                (self.monitor.run(), "monitor"),
                (self._arq_worker.async_run(), "arq worker"),
                (self._watch_changes(), "change listener"),
                (self._validate_token_loop(), "token validation"),
                (self._resize_loop(), "resize"),
                (self.migration.run(), "migration"),
            ]
            tasks = [asyncio.create_task(coro, name=name) for coro, name in loops]
            self._leader_tasks.extend(tasks)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        except Deposed as exc:
            log.warning("deposed while leading: %s", exc)
            self.lease.is_leader = False
            asyncio.create_task(self._stop_leading(), name="stop leading")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a leader loop died: start the term over rather than lead half-way
            log.error("a leader loop failed (%r); stepping down to start over", exc, exc_info=exc)
            asyncio.create_task(self._restart_leadership(), name="restart leadership")

    async def _close_arq_worker(self, worker: ArqWorker) -> None:
        try:
            await asyncio.wait_for(_close_arq_worker_impl(worker), 5.0)
        except (asyncio.TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            log.warning("closing the arq worker failed: %r", exc)

    async def _restart_leadership(self) -> None:
        await self._stop_leading()
        await self.lease.release()

    async def _resize_loop(self) -> None:
        """Bring the conduit to the desired shard count: `conduit resize N`, else CF_SHARD_COUNT."""
        self._resize_wanted.set()
        while True:
            await self._resize_wanted.wait()
            self._resize_wanted.clear()
            stored = await self.redis.hget(self.keys.conduit, "desired_shard_count")
            desired = int(stored) if stored else self.settings.shard_count
            if desired == self.conduit.shard_count:
                continue
            try:
                await self._resize(desired)
            except (FleetError, redis.exceptions.RedisError, OSError, asyncio.TimeoutError) as exc:
                log.error("resizing the conduit to %d shards failed: %s; retrying later", desired, exc)
                asyncio.get_running_loop().call_later(self.settings.scaled(10), self._resize_wanted.set)

    async def _resize(self, desired: int) -> None:
        current = self.conduit.shard_count
        log.info("resizing conduit %s from %d to %d shards", self.conduit.conduit_id, current, desired)
        if desired > current:
            await self.conduit.resize(desired)
            self.assignment.shard_count = desired
            self.assignment.changed.set()
            return
        # Shrinking: the shards at or above the new count keep their sockets until Twitch has removed
        # them, so nothing routed to them before the change is lost. Only then do the workers close them.
        await self.conduit.resize(desired)
        listed = await self.helix.get_shards(self.conduit.conduit_id)
        extra = [shard.id for shard in listed if int(shard.id) >= desired]
        if extra:
            # Twitch has been seen listing removed shards after a resize (twitchdev/issues#914).
            log.warning("after the resize Twitch still lists shards %s; ignoring them", ", ".join(extra))
        self.assignment.shard_count = desired
        self.assignment.changed.set()
        await self._forget_removed_shards(desired, current)

    async def _forget_removed_shards(self, desired: int, previous: int) -> None:
        removed = [str(i) for i in range(desired, previous)]
        if removed:
            await self._fence.hash_update(self.keys.shards, delete=removed)

    async def _validate_token_loop(self) -> None:
        # Twitch requires apps to validate their tokens at start and hourly (Validating tokens, Twitch
        # authentication guide). `validate()` replaces an invalid token itself.
        while True:
            try:
                answer = await self.tokens.validate()
                log.info("app token valid for another %s s", answer.get("expires_in"))
            except (FleetError, redis.exceptions.RedisError, OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
                log.error("app token validation failed: %s", exc)
            await asyncio.sleep(self.settings.scaled(3600))

    async def _adopt_conduit(self) -> None:
        delay_s = 0.5
        while True:
            try:
                await self.conduit.adopt()
                return
            except (FleetError, redis.exceptions.RedisError, OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
                log.error("adopting the conduit failed: %s; retrying in %.1f s", exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)

    async def _conduit_replaced(self, old_id: str, new_id: str) -> None:
        """Re-bind every shard and re-create every subscription on the new conduit."""
        await self.alerts.event("conduit_lost", "critical",
                                f"conduit {old_id} was lost and replaced by {new_id}; re-binding every shard and "
                                "re-creating the subscriptions", value=old_id,
                                message_ja=f"Conduit {old_id} が失われたため {new_id} に置き換えました。"
                                "すべてのシャードを再接続し、サブスクリプションを作り直します")
        self.assignment.shard_count = self.conduit.shard_count
        await self.redis.delete(self.keys.shards)
        assignment = await self.redis.hgetall(self.keys.assignment)
        for shard, worker in assignment.items():
            await self.redis.publish(self.keys.worker_commands_channel(worker.decode()), f"reset:{shard.decode()}")
        self.assignment.changed.set()
        self.reconciler.wake.set()

    async def _watch_changes(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.workers_channel, self.keys.channels_channel,
                                       self.keys.shard_disabled_channel, self.keys.resize_channel,
                                       self.keys.migration_channel)
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    channel = message["channel"].decode()
                    if channel == self.keys.workers_channel:
                        self.assignment.changed.set()
                    elif channel == self.keys.channels_channel:
                        self.reconciler.wake.set()
                        self.assignment.changed.set()
                    elif channel == self.keys.shard_disabled_channel:
                        log.warning("Twitch reports a shard disabled: %s", message["data"][:300].decode(errors="replace"))
                        self.health.poll_now.set()
                    elif channel == self.keys.resize_channel:
                        self._resize_wanted.set()
                    elif channel == self.keys.migration_channel:
                        self.migration.wake.set()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("pub/sub connection lost (%s); resubscribing", exc)
                await asyncio.sleep(self.settings.scaled(0.5))
            finally:
                await pubsub.aclose()

    async def _stop_leading(self) -> None:
        tasks, self._leader_tasks = self._leader_tasks, []
        await cancel_and_wait(tasks)
        if self._arq_worker is not None:
            await self._close_arq_worker(self._arq_worker)
            self._arq_worker = None


async def _close_arq_worker_impl(worker: ArqWorker) -> None:
    # Not Worker.close(): it waits for running jobs, and bind jobs wait on a batcher that is gone.
    for task in list(worker.tasks.values()):
        task.cancel()
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    if worker._pool is not None:
        await worker._pool.close(close_connection_pool=True)


async def run_coordinator(settings: Settings, stop: asyncio.Event) -> None:
    coordinator = Coordinator(settings)
    await coordinator.start()
    try:
        await stop.wait()
    finally:
        await coordinator.close()
