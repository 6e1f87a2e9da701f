"""One conduit shard held by a worker: its WebSocket sessions, binding and reconnects.

A `ShardSession` keeps its shard bound to a live EventSub session. It opens a socket, waits for
`session_welcome`, asks the leader to bind the session to the shard, and then serves the socket until
it dies, when it starts over at once: Twitch retries a notification for a disabled shard on only one
other shard before dropping it (Handling conduit events), so every second unbound can lose events.
On `session_reconnect` it dials the given URL and keeps reading the old socket until the new welcome.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
import msgspec

from common.backoff import Backoff
from common.log import ContextAdapter
from common.models import BindResult
from . import metrics
from .frames import FrameHandler

if TYPE_CHECKING:
    from .worker import WorkerContext

log = logging.getLogger(__name__)


class SessionState(enum.Enum):
    CONNECTING = "connecting"
    BINDING = "binding"
    BOUND = "bound"
    BACKING_OFF = "backing_off"
    CLOSED = "closed"


class SessionFailed(Exception):
    """Raised when a new session cannot be opened, welcomed or bound; the shard tries a fresh one."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause


class Connection:
    """One EventSub WebSocket; its reader feeds frames to the shard session."""

    def __init__(self, shard: ShardSession, url: str) -> None:
        self.shard = shard
        self.url = url
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.session_id = ""
        self.keepalive_s = float(shard.ctx.settings.keepalive_timeout_s)
        self.last_frame_s = time.monotonic()
        self.welcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.end_reason = ""
        self._reader: asyncio.Task | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def open(self) -> None:
        ctx = self.shard.ctx
        try:
            # heartbeat=None: Twitch closes a socket that sends anything but pongs (close code 4001).
            self.ws = await ctx.http.ws_connect(
                self.url, heartbeat=None, autoping=True, decode_text=False, max_msg_size=4 * 1024 * 1024,
            )
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise SessionFailed("connect_failed", f"{self.url}: {exc}") from exc
        self.last_frame_s = time.monotonic()
        ctx.watchdog.watch(self)
        self._reader = asyncio.create_task(self._read(), name=f"shard {self.shard.shard_id} reader")

    async def wait_welcome(self, timeout_s: float) -> str:
        try:
            return await asyncio.wait_for(asyncio.shield(self.welcome), timeout_s)
        except asyncio.TimeoutError:
            raise SessionFailed("welcome_timeout", f"no session_welcome within {timeout_s:.1f} s") from None

    def on_welcome(self, session_id: str, keepalive_s: int | None) -> None:
        self.session_id = session_id
        if keepalive_s:
            self.keepalive_s = float(keepalive_s)
        if not self.welcome.done():
            self.welcome.set_result(session_id)

    def deadline_exceeded(self, now_s: float) -> bool:
        settings = self.shard.ctx.settings
        limit_s = settings.scaled(self.keepalive_s * settings.keepalive_grace)
        return now_s - self.last_frame_s > limit_s

    async def _read(self) -> None:
        ws = self.ws
        handler = self.shard.frames
        try:
            async for message in ws:
                self.last_frame_s = time.monotonic()
                if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    handler.handle(self, message.data)
                elif message.type == aiohttp.WSMsgType.ERROR:
                    self.end_reason = self.end_reason or f"error: {ws.exception()}"
                    break
        except (aiohttp.ClientError, OSError) as exc:
            self.end_reason = self.end_reason or f"error: {exc}"
        finally:
            if not self.end_reason:
                self.end_reason = f"closed with code {ws.close_code}"
            self._finish()

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.shard.ctx.watchdog.forget(self)
        if not self.welcome.done():
            self.welcome.set_exception(SessionFailed("closed_before_welcome", self.end_reason))
            self.welcome.exception()  # mark retrieved; the waiter may already be gone
        self.shard.connection_ended(self)

    async def close(self, reason: str, code: int = 1000) -> None:
        """Close the socket; safe to call more than once and from any task."""
        if not self.end_reason:
            self.end_reason = reason
        # Tell the shard first, so its replacement session starts while this socket shuts down.
        self._finish()
        if self.ws is not None and not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(code=code), 2.0)
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
                pass
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


class SocketHolder:
    """Base of a conduit shard's session and a legacy connection.

    It runs the subclass's `_run()` as a task, notices a lost socket, and follows `session_reconnect`
    by dialing the new URL while the old socket keeps reading until the new welcome.
    """

    CLOSE_REASON = "closed"

    def __init__(self, shard_id: str, ctx: WorkerContext, logger: logging.Logger, task_name: str) -> None:
        self.shard_id = shard_id
        self.ctx = ctx
        self.state = SessionState.CONNECTING
        self.current: Connection | None = None
        self.frames = FrameHandler(self)
        self._reconnecting: Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._task_name = task_name
        self._closing = False
        self._log = ContextAdapter(logger, {"shard_id": shard_id, "worker_id": ctx.worker_id})

    @property
    def session_id(self) -> str:
        return self.current.session_id if self.current else ""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._task_name)

    async def close(self) -> None:
        """Close every socket and stop. A second call does nothing more."""
        self._closing = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for conn in (self.current, self._reconnecting):
            if conn is not None:
                await conn.close(self.CLOSE_REASON)
        self.state = SessionState.CLOSED

    async def _run(self) -> None:
        raise NotImplementedError

    def connection_ended(self, conn: Connection) -> None:
        """Called by a connection's reader when its socket is gone."""
        if conn is self.current and self._reconnecting is None and not self._closing:
            self.state = SessionState.CONNECTING
            self._lost.set()

    def follow_reconnect(self, old: Connection, url: str) -> None:
        if old is not self.current or self._reconnecting is not None or self._closing:
            return
        asyncio.create_task(self._follow_reconnect(old, url), name=f"{self.shard_id} reconnect")

    async def _follow_reconnect(self, old: Connection, url: str) -> None:
        # Dial reconnect_url unmodified and keep reading the old socket until the new welcome
        # (EventSub WebSocket guide); closing the old one first loses the session (close code 4007).
        new = Connection(self, url)
        self._reconnecting = new
        try:
            await new.open()
            session_id = await new.wait_welcome(self.ctx.settings.scaled(self.ctx.settings.bind_deadline_s))
            await self._reconnect_welcomed(old, session_id)
        except SessionFailed as exc:
            self._log.warning("following session_reconnect failed: %s", exc, extra={"session_id": old.session_id})
            self._reconnecting = None
            await new.close("reconnect failed")
            if old.closed:
                self.connection_ended(old)
            return
        self.current = new
        self._reconnecting = None
        await self._reconnect_followed(new)
        await old.close("replaced by reconnect")
        if new.closed:
            self.connection_ended(new)

    async def _reconnect_welcomed(self, old: Connection, session_id: str) -> None:
        """Run once the new socket of a reconnect is welcomed, before it replaces the old one."""

    async def _reconnect_followed(self, new: Connection) -> None:
        """Run once the new socket of a reconnect replaced the old one."""


class ShardSession(SocketHolder):
    """Keeps one shard bound to a live session; `start()` runs it, `close()` stops it."""

    CLOSE_REASON = "shard closed"

    def __init__(self, shard_id: str, ctx: WorkerContext) -> None:
        super().__init__(shard_id, ctx, log, f"shard {shard_id}")
        self.binds = 0
        self.bind_failures = 0
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"<ShardSession {self.shard_id} {self.state.value} session={self.session_id or '-'}>"

    async def release(self, still_bound: Callable[[str], Awaitable[bool]], timeout_s: float) -> None:
        """Keep serving the current socket until the shard points elsewhere (or timeout), then close.

        The new owner binds its own session first, so the shard never goes without a live socket.
        """
        self._closing = True
        session_id = self.session_id
        deadline = time.monotonic() + timeout_s
        while session_id and time.monotonic() < deadline and self.current is not None and not self.current.closed:
            if not await still_bound(session_id):
                break
            await asyncio.sleep(min(0.1, timeout_s / 20))
        await self.close()

    def reset(self, reason: str) -> None:
        """Drop the current session and open a fresh one (used when the leader finds the shard disabled)."""
        if self.current is not None and not self.current.closed:
            self._log.info("resetting session: %s", reason, extra={"session_id": self.session_id})
            asyncio.create_task(self.current.close(reason), name=f"shard {self.shard_id} reset")

    # -- main loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(base_s=self.ctx.settings.scaled(0.2), cap_s=self.ctx.settings.scaled(10.0))
        cause = "start"
        while not self._closing:
            self.reconnects += 1
            metrics.RECONNECTS.labels(cause).inc()
            try:
                conn = await self._open_bound()
            except SessionFailed as exc:
                self.state = SessionState.BACKING_OFF
                delay = backoff.next_delay()
                self._log.warning("session failed (%s); new session in %.2f s", exc, delay)
                cause = exc.cause
                await asyncio.sleep(delay)
                continue
            healthy_since = time.monotonic()
            await self._lost.wait()
            self._lost.clear()
            cause = _cause_of(self.current.end_reason if self.current else "")
            if not self._closing:
                self.ctx.record_disconnect("conduit", self.shard_id)
            self._log.warning("session lost (%s); reconnecting now", self.current.end_reason if self.current else cause,
                              extra={"session_id": conn.session_id})
            if time.monotonic() - healthy_since > self.ctx.settings.scaled(30):
                backoff.reset()

    async def _open_bound(self) -> Connection:
        self.state = SessionState.CONNECTING
        conn = Connection(self, self.ctx.ws_url)
        try:
            await conn.open()
            session_id = await conn.wait_welcome(self.ctx.settings.scaled(self.ctx.settings.bind_deadline_s))
            self.state = SessionState.BINDING
            await self._bind(session_id)
        except BaseException:
            await conn.close("session setup failed")
            raise
        if conn.closed:
            raise SessionFailed("closed_after_bind", conn.end_reason)
        self.current = conn
        self.state = SessionState.BOUND
        return conn

    async def _bind(self, session_id: str) -> None:
        started = time.monotonic()
        result: BindResult = await self.ctx.bind(self.shard_id, session_id)
        metrics.BIND_LATENCY.observe(time.monotonic() - started)
        if not result.ok:
            self.bind_failures += 1
            metrics.BINDS.labels("failed").inc()
            raise SessionFailed("bind_failed", result.error or "bind rejected")
        self.binds += 1
        metrics.BINDS.labels("ok").inc()
        self._log.info("bound", extra={"session_id": session_id})

    async def _reconnect_welcomed(self, old: Connection, session_id: str) -> None:
        if session_id != old.session_id:
            self._log.info("reconnect brought a new session id; binding it", extra={"session_id": session_id})
            await self._bind(session_id)

    async def _reconnect_followed(self, new: Connection) -> None:
        metrics.RECONNECTS.labels("session_reconnect").inc()
        self._log.info("followed session_reconnect", extra={"session_id": new.session_id})


def _cause_of(reason: str) -> str:
    if reason.startswith("keepalive"):
        return "keepalive_timeout"
    if "code" in reason:
        return "closed"
    return "error"
