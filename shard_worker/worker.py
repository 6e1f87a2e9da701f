"""The shard worker process: heartbeat, assigned shards, publisher.

The worker registers in `cf:workers` with a heartbeat deadline, runs a `ShardSession` for every shard
the leader assigned to it, and learns about changes from pub/sub plus a periodic read, so a lost
message costs seconds, not shards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

import aiohttp
import redis.asyncio as redis
import redis.exceptions

from common.alerts import Alerts
from common.helix import HelixClient
from common.keys import Keys
from common.log import ContextAdapter
from common.ratelimit import RateLimiter
from common.redisconn import arq_redis, control_redis, events_redis
from common.settings import Settings
from common.tasks import cancel_and_wait, spawn
from common.token import UserTokenManager
from . import metrics
from .bind import BindClient
from .frames import ReplayGuard
from .http import start_metrics_server
from .legacy import LegacySession
from .publisher import Publisher
from .session import SessionState, ShardSession
from .watchdog import Watchdog

log = logging.getLogger(__name__)


class WorkerContext:
    """The state and clients that every shard session of a worker shares."""

    def __init__(self, settings: Settings, worker_id: str, http: aiohttp.ClientSession,
                 publisher: Publisher, binder: BindClient, watchdog: Watchdog) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.http = http
        self.publisher = publisher
        self.binder = binder
        self.watchdog = watchdog
        self.replay_guard = ReplayGuard(settings.replay_window_s)
        self.rejected = 0
        self.legacy_created = 0
        self.control_redis: redis.Redis | None = None
        # Broadcaster id -> until (ms, 0 = open-ended): events of these channels are deduplicated by
        # event identity, because two transports deliver them (`cf:dedup-identity`).
        self.identity: dict[str, int] = {}
        self._forwarding: set[asyncio.Task] = set()
        separator = "&" if "?" in settings.eventsub_ws_url else "?"
        self.ws_url = f"{settings.eventsub_ws_url}{separator}keepalive_timeout_seconds={settings.keepalive_timeout_s}"

    async def bind(self, shard_id: str, session_id: str):
        return await self.binder.bind(shard_id, session_id)

    def record_disconnect(self, transport: str, name: str) -> None:
        """Count an unexpected socket loss of `transport` for the migration's comparison."""
        task = asyncio.create_task(self._record_disconnect(transport, name), name="record disconnect")
        self._forwarding.add(task)
        task.add_done_callback(self._forwarding.discard)

    async def _record_disconnect(self, transport: str, name: str) -> None:
        now_ms = int(time.time() * 1000)
        key = Keys(self.settings.key_prefix).disconnects(transport)
        try:
            pipe = self.control_redis.pipeline(transaction=False)
            pipe.zadd(key, {f"{now_ms}:{self.worker_id}:{name}": now_ms})
            pipe.zremrangebyscore(key, "-inf", now_ms - int(self.settings.scaled(2 * 3600) * 1000))
            await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("could not record the disconnect of %s: %s", name, exc)

    def forward_shard_disabled(self, event: bytes) -> None:
        """Pass a conduit.shard.disabled event to the leader, which repairs the shard."""
        task = asyncio.create_task(self._forward(event), name="forward shard disabled")
        self._forwarding.add(task)
        task.add_done_callback(self._forwarding.discard)

    async def _forward(self, event: bytes) -> None:
        try:
            await self.control_redis.publish(Keys(self.settings.key_prefix).shard_disabled_channel, event)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("could not forward conduit.shard.disabled to the leader: %s", exc)


class ShardWorker:
    """Runs the shards assigned to this worker until `close()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id = settings.effective_worker_id
        self.keys = Keys(settings.key_prefix)
        self.sessions: dict[str, ShardSession] = {}
        self.legacy: dict[int, LegacySession] = {}
        self.started_at_ms = int(time.time() * 1000)
        self._tasks: list[asyncio.Task] = []
        self._assignment_changed = asyncio.Event()
        self._identity_changed = asyncio.Event()
        self.crashed = asyncio.Event()
        self._releasing: set[asyncio.Task] = set()
        self.draining = False
        self._log = ContextAdapter(log, {"worker_id": self.worker_id})

    async def start(self) -> None:
        settings = self.settings
        self.redis = control_redis(settings)
        self.events = events_redis(settings)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.arq = arq_redis(settings, self.keys.arq_queue)
        self.publisher = Publisher(settings, self.events)
        self.publisher.on_lost = self._report_lost_events
        self.publisher.start()
        self.watchdog = Watchdog(interval_s=max(0.05, settings.scaled(settings.keepalive_timeout_s) / 10))
        self.watchdog.start()
        self.binder = BindClient(settings, self.arq, self.worker_id)
        self.ctx = WorkerContext(settings, self.worker_id, self.http, self.publisher, self.binder, self.watchdog)
        self.ctx.control_redis = self.redis
        # The legacy slots' calls use the user token, whose bucket every worker shares.
        user_limiter = RateLimiter(self.redis, self.keys, time_scale=settings.time_scale, key=self.keys.user_ratelimit)
        self.legacy_helix = HelixClient(settings, UserTokenManager(settings, self.redis, self.http), self.http,
                                        limiter=user_limiter)
        await self._load_identity()
        self._metrics_runner = None
        self.metrics_port = 0
        if settings.metrics_port >= 0:
            self._metrics_runner, self.metrics_port = await start_metrics_server(
                settings.http_host, settings.metrics_port, self.statistics, self.readiness)
        await self._heartbeat()
        await self.redis.publish(self.keys.workers_channel, f"joined:{self.worker_id}")
        self._tasks = [
            spawn(self._heartbeat_loop(), "worker heartbeat", on_crash=self._crashed),
            spawn(self._listen_loop(), "worker pubsub", on_crash=self._crashed),
            spawn(self._reload_loop(self._assignment_changed, self._apply_assignment, "the assignment"),
                  "worker assignment", on_crash=self._crashed),
            spawn(self._reload_loop(self._identity_changed, self._load_identity, "cf:dedup-identity"),
                  "worker identity dedup", on_crash=self._crashed),
        ]
        self._log.info("worker started; publishing to %d partitions", settings.stream_partitions)

    async def drain(self, timeout_s: float) -> int:
        """Hand every shard over make-before-break, waiting at most `timeout_s`; return how many remain.

        The worker marks itself draining; the leader then moves its shards to other workers one at a
        time, and each old socket closes only after the shard is bound on its new owner.
        """
        self.draining = True
        self._log.info("draining %d shards (deadline %.1f s)", len(self.sessions), timeout_s)
        deadline = time.monotonic() + timeout_s
        try:
            await self._heartbeat()
            await self.redis.publish(self.keys.workers_channel, f"draining:{self.worker_id}")
        except (redis.exceptions.RedisError, OSError) as exc:
            self._log.warning("could not announce the drain: %s", exc)
        checked_at = 0.0
        handoff_possible = True
        while (self.sessions or self._releasing) and time.monotonic() < deadline and not self.crashed.is_set():
            if time.monotonic() - checked_at > 0.5:
                checked_at = time.monotonic()
                if not await self._handoff_possible():
                    handoff_possible = False
                    break
            await asyncio.sleep(0.05)
        remaining = len(self.sessions)
        if remaining and not handoff_possible:
            self._log.warning("drain ended: no leader or other worker to take %d shards", remaining)
        elif remaining:
            self._log.error("drain deadline reached: %d shards not handed over (%s)", remaining,
                            ", ".join(sorted(self.sessions, key=int)))
        else:
            self._log.info("drain finished: every shard handed over")
        return remaining

    async def _handoff_possible(self) -> bool:
        try:
            if not await self.redis.exists(self.keys.leader):
                return False
            now_ms = int(time.time() * 1000)
            for worker in await self.redis.zrangebyscore(self.keys.workers, now_ms, "+inf"):
                if worker.decode() == self.worker_id:
                    continue
                if await self.redis.hget(self.keys.worker_info(worker.decode()), "draining") != b"1":
                    return True
        except (redis.exceptions.RedisError, OSError):
            return True  # cannot tell: keep waiting until the deadline
        return False

    async def _report_lost_events(self, count: int) -> None:
        await Alerts(self.redis, self.keys).event(
            "events_lost", "critical",
            f"worker {self.worker_id} dropped {count} events because its publish buffer "
            f"(CF_PUBLISH_BUFFER_MAX={self.settings.publish_buffer_max}) was full while Redis was unreachable",
            value=str(count),
            message_ja=f"ワーカー {self.worker_id} は Redis に接続できない間に送信バッファが満杯になり、"
                       f"{count} 件のイベントを失いました")

    def _crashed(self, error: BaseException) -> None:
        # A worker missing a core loop must not pretend to be healthy: stop, and let the
        # orchestrator restart it.
        self.crashed.set()

    async def close(self) -> None:
        """Close every shard's sockets, flush the publisher and leave the fleet."""
        self._log.info("worker stopping with %d shards", len(self.sessions))
        await cancel_and_wait(self._tasks)
        for task in self._releasing:
            task.cancel()
        await asyncio.gather(*self._releasing, return_exceptions=True)
        await asyncio.gather(*(session.close() for session in self.sessions.values()), return_exceptions=True)
        self.sessions.clear()
        await asyncio.gather(*(session.close() for session in self.legacy.values()), return_exceptions=True)
        self.legacy.clear()
        await self.publisher.close()
        await self.watchdog.close()
        try:
            await self.redis.zrem(self.keys.workers, self.worker_id)
            await self.redis.delete(self.keys.worker_info(self.worker_id))
            await self.redis.publish(self.keys.workers_channel, f"left:{self.worker_id}")
        except (redis.exceptions.RedisError, OSError) as exc:
            self._log.warning("could not deregister: %s", exc)
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.arq.aclose()
        await self.http.close()
        await self.redis.aclose()
        await self.events.aclose()
        self._log.info("worker stopped; published=%d duplicates=%d", self.publisher.published, self.publisher.duplicates)

    def statistics(self) -> dict:
        states: dict[str, int] = {}
        for session in self.sessions.values():
            states[session.state.value] = states.get(session.state.value, 0) + 1
        return {
            "worker_id": self.worker_id,
            "shards": len(self.sessions),
            "states": states,
            "published": self.publisher.published,
            "duplicates": self.publisher.duplicates,
            "pending": self.publisher.pending,
            "lost": self.publisher.lost,
            "rejected": self.ctx.rejected,
            "keepalive_timeouts": self.watchdog.timeouts,
            "legacy": {session.shard_id: {"state": session.state.value, "subscriptions": len(session.subscriptions)}
                       for session in self.legacy.values()},
        }

    def readiness(self) -> tuple[bool, dict]:
        """Return whether every assigned shard is bound (true with no shards), and the unbound ones.

        A draining or crashed worker is not ready, so a rollout does not count it as available.
        """
        unbound = sorted((shard for shard, session in self.sessions.items() if session.state is not SessionState.BOUND),
                         key=int)
        ready = not unbound and not self.draining and not self.crashed.is_set()
        return ready, {"shards": len(self.sessions), "unbound": unbound, "draining": self.draining}

    # -- heartbeat --------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        now_ms = int(time.time() * 1000)
        deadline_ms = now_ms + int(self.settings.scaled(self.settings.worker_lease_s) * 1000)
        stats = self.statistics() if hasattr(self, "ctx") else {}
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.workers, {self.worker_id: deadline_ms})
        pipe.hset(self.keys.worker_info(self.worker_id), mapping={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at_ms": self.started_at_ms,
            "heartbeat_ms": now_ms,
            "shards": len(self.sessions),
            "draining": int(self.draining),
            "metrics_port": self.metrics_port,
            "published": stats.get("published", 0),
            "duplicates": stats.get("duplicates", 0),
            "legacy_slots": len(self.legacy),
        })
        pipe.pexpire(self.keys.worker_info(self.worker_id), int(self.settings.scaled(self.settings.worker_lease_s) * 3000))
        await pipe.execute()

    async def _heartbeat_loop(self) -> None:
        interval_s = self.settings.scaled(self.settings.worker_heartbeat_s)
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self._heartbeat()
            except (redis.exceptions.RedisError, OSError) as exc:
                # Shards keep running; the leader may move them if the lease runs out.
                self._log.warning("heartbeat failed: %s", exc)

    # -- assignment -------------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        results_channel = self.keys.bind_results_channel(self.worker_id).encode()
        commands_channel = self.keys.worker_commands_channel(self.worker_id).encode()
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.assignment_channel, results_channel, commands_channel,
                                       self.keys.channels_channel)
                self._assignment_changed.set()  # re-read after (re)subscribing: messages may have been missed
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    channel = message["channel"]
                    if channel == results_channel:
                        self.binder.on_result(message["data"])
                    elif channel == commands_channel:
                        self._on_command(message["data"])
                    elif channel == self.keys.channels_channel.encode():
                        self._channels_changed()
                    else:
                        self._assignment_changed.set()
            except (redis.exceptions.RedisError, OSError) as exc:
                self._log.warning("pub/sub connection lost (%s); resubscribing", exc)
                await asyncio.sleep(self.settings.scaled(0.5))
            finally:
                await pubsub.aclose()

    def _channels_changed(self) -> None:
        for session in self.legacy.values():
            session.changed.set()
        self._identity_changed.set()

    async def _load_identity(self) -> None:
        """Read `cf:dedup-identity` into the context; expired marks are left for the leader to prune."""
        raw = await self.redis.hgetall(self.keys.identity_dedup)
        self.ctx.identity = {broadcaster.decode(): int(until) for broadcaster, until in raw.items()}

    async def _reload_loop(self, changed: asyncio.Event, load: Callable[[], Awaitable[None]], what: str) -> None:
        """Run `load` when `changed` is set by a pub/sub message, and at least once a heartbeat."""
        interval_s = self.settings.scaled(self.settings.worker_heartbeat_s)
        while True:
            try:
                await asyncio.wait_for(changed.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
            changed.clear()
            try:
                await load()
            except (redis.exceptions.RedisError, OSError) as exc:
                self._log.warning("reading %s failed: %s", what, exc)

    def _on_command(self, data: bytes) -> None:
        command, _, shard_id = data.decode().partition(":")
        session = self.sessions.get(shard_id)
        if command == "reset" and session is not None:
            session.reset("the leader saw the shard disabled")
        else:
            self._log.warning("ignoring unknown worker command %r", data[:100])

    def _bound_checker(self, shard_id: str):
        async def still_bound(session_id: str) -> bool:
            try:
                raw = await self.redis.hget(self.keys.shards, shard_id)
            except (redis.exceptions.RedisError, OSError):
                return True  # cannot tell: keep the socket until the release times out
            return raw is None or session_id.encode() in raw
        return still_bound

    async def _apply_assignment(self) -> None:
        assignment = await self.redis.hgetall(self.keys.assignment)
        epoch = await self.redis.get(self.keys.leader_epoch)
        self.binder.epoch = int(epoch or 0)
        mine = {shard.decode() for shard, worker in assignment.items() if worker.decode() == self.worker_id}
        removed = [shard for shard in self.sessions if shard not in mine]
        added = sorted(mine - self.sessions.keys(), key=int)
        for shard_id in removed:
            session = self.sessions.pop(shard_id)
            self._log.info("shard %s moved away; closing it once the new owner is bound", shard_id,
                           extra={"shard_id": shard_id})
            task = asyncio.create_task(
                session.release(self._bound_checker(shard_id), self.settings.scaled(2 * self.settings.bind_deadline_s)),
                name=f"shard {shard_id} release")
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
        for shard_id in added:
            session = ShardSession(shard_id, self.ctx)
            self.sessions[shard_id] = session
            session.start()
        if added or removed:
            self._log.info("assignment applied: +%d -%d, now %d shards", len(added), len(removed), len(self.sessions))
        metrics.SHARDS.labels("assigned").set(len(self.sessions))
        await self._apply_legacy_assignment()

    async def _apply_legacy_assignment(self) -> None:
        """Run the legacy slots the leader gave this worker; close the ones it took away.

        A legacy connection cannot be handed over make-before-break: Twitch allows only 3 connections
        with subscriptions, and a new session needs its own subscriptions. So the old owner closes
        first and the new one connects and creates them again.
        """
        raw = await self.redis.hgetall(self.keys.legacy_assignment)
        mine = {int(slot) for slot, worker in raw.items() if worker.decode() == self.worker_id}
        if self.draining:
            mine = set()
        for slot in [slot for slot in self.legacy if slot not in mine]:
            session = self.legacy.pop(slot)
            self._log.info("legacy slot %d moved away; closing it", slot)
            await session.close()
        for slot in sorted(mine - self.legacy.keys()):
            session = LegacySession(slot, self.ctx, self.legacy_helix)
            self.legacy[slot] = session
            self._log.info("legacy slot %d assigned; connecting", slot)
            session.start()


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Run a worker until `stop` is set; after SIGTERM it drains first, after SIGINT it stops at once."""
    worker = ShardWorker(settings)
    await worker.start()
    try:
        stopped = asyncio.create_task(stop.wait())
        crashed = asyncio.create_task(worker.crashed.wait())
        await asyncio.wait([stopped, crashed], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        crashed.cancel()
        drain = getattr(stop, "signal_name", "SIGTERM") != "SIGINT"
        if stop.is_set() and not worker.crashed.is_set() and drain:
            await worker.drain(settings.scaled(settings.drain_timeout_s))
    finally:
        await worker.close()
    if worker.crashed.is_set():
        raise SystemExit(1)
