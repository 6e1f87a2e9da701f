"""One legacy WebSocket connection (a slot) held by a worker: its session and its subscriptions.

The plain WebSocket transport binds subscriptions to one session, made with a user token. So a
`LegacySession` opens a socket, and right after `session_welcome` creates the subscriptions of every
channel placed on its slot, with `transport.method = websocket` and the new session id. Twitch closes
a connection that has no subscription 10 s after the welcome, and it does not carry subscriptions over
to a new session. On `session_reconnect` it dials the given URL, keeps reading the old socket until the
new welcome, and creates nothing, since the subscriptions move with the session. A lost socket is
replaced at once and every subscription created again.

Frames go through the same `FrameHandler` as a conduit shard's, so events land in the same streams,
with `transport = websocket` and the slot name (`legacy-0`) as `shard_id`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import msgspec
import redis.exceptions

from common.backoff import Backoff
from common.channels import LEGACY_MODES
from common.errors import FleetError, HelixError
from common.helix import HelixClient
from common.keys import Keys
from common.legacy import slot_name
from common.models import Channel
from common.subscriptions import Wanted, channel_subscriptions
from .session import Connection, SessionFailed, SessionState, SocketHolder

if TYPE_CHECKING:
    from .worker import WorkerContext

log = logging.getLogger(__name__)

_channel_decoder = msgspec.json.Decoder(Channel)
CREATE_CONCURRENCY = 8
SESSION_GONE = "does not exist or has already disconnected"


class LegacySession(SocketHolder):
    """Keeps one legacy slot connected and its subscriptions created; `start()` runs it."""

    CLOSE_REASON = "legacy slot closed"

    def __init__(self, slot: int, ctx: WorkerContext, helix: HelixClient) -> None:
        super().__init__(slot_name(slot), ctx, log, slot_name(slot))
        self.slot = slot
        self.helix = helix
        self.keys = Keys(ctx.settings.key_prefix)
        self.subscriptions: dict[str, str] = {}  # subscription identity -> Twitch subscription id
        self.desired_count = 0
        self.failures = 0
        self.last_error = ""
        self.disconnects = 0
        self.sessions_opened = 0
        self.subscribed_at_ms = 0
        self.connected_at_ms = 0
        self.changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<LegacySession {self.shard_id} {self.state.value} subscriptions={len(self.subscriptions)}>"

    async def close(self) -> None:
        """Close the socket, stop and report the state. Twitch ends the session's subscriptions with it."""
        await super().close()
        await self._report()

    # -- main loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self.ctx.settings
        backoff = Backoff(base_s=settings.scaled(0.2), cap_s=settings.scaled(10.0))
        while not self._closing:
            desired = await self._desired_or_none()
            if desired is not None and not desired:
                # An idle connection is closed by Twitch after 10 s (close code 4003): wait for channels.
                self.state = SessionState.BACKING_OFF
                await self._report()
                await self._wait_changed(settings.scaled(30))
                continue
            try:
                await self._open()
                await self._sync()
            except SessionFailed as exc:
                self.state = SessionState.BACKING_OFF
                self.last_error = str(exc)
                if self.current is not None:
                    await self.current.close("legacy session setup failed")
                    self.current = None
                delay = backoff.next_delay()
                self._log.warning("legacy session failed (%s); new session in %.2f s", exc, delay)
                await self._report()
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            await self._serve()
            if self._closing:
                return
            self.disconnects += 1
            self.ctx.record_disconnect("websocket", self.shard_id)
            reason = self.current.end_reason if self.current else "lost"
            self._log.warning("legacy session lost (%s); reconnecting and re-creating %d subscriptions now",
                              reason, len(self.subscriptions))
            self.current = None
            self.subscriptions = {}

    async def _open(self) -> None:
        self.state = SessionState.CONNECTING
        conn = Connection(self, self.ctx.ws_url)
        await conn.open()
        try:
            await conn.wait_welcome(self.ctx.settings.scaled(self.ctx.settings.legacy_first_subscription_s))
        except SessionFailed:
            await conn.close("no welcome")
            raise
        self.current = conn
        self.subscriptions = {}
        self.sessions_opened += 1
        self.connected_at_ms = int(time.time() * 1000)
        self.state = SessionState.BINDING

    async def _serve(self) -> None:
        """Wait until the socket is lost, syncing the subscriptions on every change of the placements."""
        resync_s = self.ctx.settings.scaled(30)
        while not self._closing:
            lost = asyncio.ensure_future(self._lost.wait())
            changed = asyncio.ensure_future(self.changed.wait())
            try:
                await asyncio.wait([lost, changed], timeout=resync_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                changed.cancel()
            if self._lost.is_set():
                self._lost.clear()
                return
            self.changed.clear()
            try:
                await self._sync()
            except SessionFailed as exc:
                self._log.warning("syncing subscriptions failed: %s", exc)
                if self.current is not None:
                    await self.current.close(str(exc))

    async def _wait_changed(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.changed.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        self.changed.clear()

    # -- subscriptions ------------------------------------------------------------------------

    async def _desired_or_none(self) -> dict[str, Wanted] | None:
        try:
            return await self._desired()
        except (redis.exceptions.RedisError, OSError) as exc:
            self._log.warning("reading the legacy placements failed: %s", exc)
            return None

    async def _desired(self) -> dict[str, Wanted]:
        """Return subscription key -> (type, version, condition) for every channel placed on this slot."""
        client = self.ctx.control_redis
        placements = await client.hgetall(self.keys.legacy_slots)
        mine = [b.decode() for b, value in placements.items() if value.split(b":", 1)[0] == str(self.slot).encode()]
        wanted: dict[str, Wanted] = {}
        if not mine:
            self.desired_count = 0
            return wanted
        defaults = self.ctx.settings.default_types
        for raw in await client.hmget(self.keys.channels, mine):
            if raw is None:
                continue
            channel = _channel_decoder.decode(raw)
            if channel.transport_mode in LEGACY_MODES:
                wanted.update(channel_subscriptions(channel, defaults))
        self.desired_count = len(wanted)
        return wanted

    async def _sync(self) -> None:
        """Delete the subscriptions no longer placed here, then create the missing ones on this session."""
        conn = self.current
        if conn is None or conn.closed:
            raise SessionFailed("closed", "the legacy socket closed before its subscriptions were created")
        desired = await self._desired_or_none()
        if desired is None:
            return
        session_id = conn.session_id
        for key in [key for key in self.subscriptions if key not in desired]:
            subscription_id = self.subscriptions.pop(key)
            try:
                await self.helix.delete_subscription(subscription_id)
            except (FleetError, OSError, asyncio.TimeoutError) as exc:
                self._log.warning("deleting legacy subscription %s failed: %s", subscription_id, exc)
        missing = [(key, wanted) for key, wanted in desired.items() if key not in self.subscriptions]
        semaphore = asyncio.Semaphore(CREATE_CONCURRENCY)
        errors: list[str] = []

        async def create(key: str, wanted: Wanted) -> None:
            async with semaphore:
                if conn.closed:
                    return
                type_, version, condition = wanted
                try:
                    created = await self.helix.create_subscription(type_, version, condition, session_id=session_id)
                except (HelixError, FleetError, OSError, asyncio.TimeoutError) as exc:
                    errors.append(f"{type_} for {condition.get('broadcaster_user_id', '?')}: {exc}")
                    return
                if created is not None:
                    self.subscriptions[key] = created.id
                    self.ctx.legacy_created += 1

        await asyncio.gather(*(create(key, wanted) for key, wanted in missing))
        if conn.closed:
            raise SessionFailed("closed", "the legacy socket closed while its subscriptions were created")
        if errors:
            self.failures += len(errors)
            self.last_error = errors[0]
            self._log.warning("%d of %d legacy subscriptions could not be created (first: %s); retrying on the next sync",
                              len(errors), len(missing), errors[0])
            if any(SESSION_GONE in error for error in errors):
                raise SessionFailed("session_gone", errors[0])
            asyncio.get_running_loop().call_later(self.ctx.settings.scaled(5), self.changed.set)
        elif missing:
            self.last_error = ""
        if missing and self.subscriptions:
            self.subscribed_at_ms = int(time.time() * 1000)
            self._log.info("legacy session %s has %d subscriptions (%d created)", session_id,
                           len(self.subscriptions), len(missing) - len(errors))
        self.state = SessionState.BOUND
        await self._report()

    async def _report(self) -> None:
        status = {
            "slot": self.slot,
            "name": self.shard_id,
            "worker_id": self.ctx.worker_id,
            "state": self.state.value,
            "session_id": self.session_id,
            "subscriptions": len(self.subscriptions),
            "desired": self.desired_count,
            "failures": self.failures,
            "helix_consecutive_failures": self.helix.consecutive_failures,
            "last_error": self.last_error[:300],
            "disconnects": self.disconnects,
            "sessions_opened": self.sessions_opened,
            "connected_at_ms": self.connected_at_ms,
            "subscribed_at_ms": self.subscribed_at_ms,
            "updated_at_ms": int(time.time() * 1000),
        }
        try:
            await self.ctx.control_redis.hset(self.keys.legacy_connections, str(self.slot), msgspec.json.encode(status))
        except (redis.exceptions.RedisError, OSError) as exc:
            self._log.warning("could not store the legacy connection status: %s", exc)

    # -- session_reconnect ------------------------------------------------------------------------

    async def _reconnect_followed(self, new: Connection) -> None:
        # The subscriptions move to the new connection with the session (EventSub WebSocket guide), so
        # nothing is created here.
        self._log.info("followed session_reconnect; %d subscriptions kept", len(self.subscriptions),
                       extra={"session_id": new.session_id})
        await self._report()
