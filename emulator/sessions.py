"""WebSocket sessions: connections, the reconnect handoff and what a closed socket does to shards."""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import WSMsgType, web

from . import frames
from .clock import rfc3339_now
from .state import DISCONNECTED, FAILED_TO_RECONNECT, EmulatorState, Shard

logger = logging.getLogger(__name__)

# Shard status after the server closes a socket with a given code (Twitch close codes
# 4000-4007, WebSocket reference page). Any other end, including an abrupt drop or a
# close by the client, gives websocket_disconnected.
STATUS_BY_CLOSE_CODE = {
    4000: "websocket_internal_error",
    4001: "websocket_received_inbound_traffic",
    4002: "websocket_failed_ping_pong",
    4004: FAILED_TO_RECONNECT,
    4005: "websocket_network_timeout",
    4006: "websocket_network_error",
}

# Per-session counters served by GET /_emulator/sessions.
SESSION_COUNTERS = ("frames_sent", "notifications", "keepalives", "pings_sent", "pongs_received", "malformed_sent")

# Real seconds the emulator waits, after the welcome on the new socket, before it
# closes the old socket of a reconnect itself.
OLD_SOCKET_CLOSE_DELAY_S = 0.5


class Connection:
    """One WebSocket connection; a session has one, or two during a reconnect handoff."""

    def __init__(self, ws: web.WebSocketResponse, transport: Any, host: str) -> None:
        self.ws = ws
        self.transport = transport
        self.host = host
        self.session: Session | None = None
        self.last_sent = time.monotonic()
        self.last_pong = time.monotonic()
        self.ping_sent_at: float | None = None
        self.silent = False
        self.handed_off = False
        self.end_status: str | None = None

    async def send(self, data: bytes) -> bool:
        """Send one text frame; return False when the socket is silent or closed."""
        return await self.send_raw(data, WSMsgType.TEXT)

    async def send_raw(self, data: bytes, message_type: WSMsgType) -> bool:
        """Send one frame of ``message_type``. Return False when the socket is silent or closed."""
        if self.silent or self.ws.closed:
            return False
        try:
            await self.ws.send_frame(data, message_type)
        except (ConnectionError, RuntimeError):
            return False
        self.last_sent = time.monotonic()
        if self.session is not None:
            self.session.counters["frames_sent"] += 1
        return True

    async def close(self, code: int, reason: str, counters: Any) -> None:
        """Close with a close frame; the shard status follows the code."""
        self.end_status = STATUS_BY_CLOSE_CODE.get(code, DISCONNECTED)
        counters.closed_codes[code] += 1
        await self.ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        """Tear down TCP without a close frame, so the client sees 1006."""
        if self.transport is not None:
            self.transport.abort()


class Session:
    """An EventSub session; its id survives a reconnect."""

    def __init__(self, connection: Connection, keepalive_s: int, overlap_resend: int, expect_pongs: bool = True) -> None:
        self.id = str(uuid.uuid4())
        self.keepalive_s = keepalive_s
        self.connected_at = rfc3339_now()
        self.welcome_at = time.monotonic()
        self.current = connection
        self.state = "connected"
        self.ever_bound = False
        self.recent: collections.deque[bytes] = collections.deque(maxlen=overlap_resend)
        self.reconnect_token: str | None = None
        self.grace_handle: asyncio.TimerHandle | None = None
        # False: unanswered pings do not close the session with 4002.
        self.expect_pongs = expect_pongs
        self.counters: collections.Counter[str] = collections.Counter()
        connection.session = self

    def to_wire(self, shard_ids: list[str], subscription_count: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": "silent" if self.current.silent else self.state,
            "connected_at": self.connected_at,
            "keepalive_timeout_seconds": self.keepalive_s,
            "shard_ids": shard_ids,
            "websocket_subscriptions": subscription_count,
            "expect_pongs": self.expect_pongs,
            "counters": {name: self.counters[name] for name in SESSION_COUNTERS},
        }

    async def send_tracked(self, data: bytes) -> bool:
        """Send a notification or revocation and remember it for the reconnect overlap."""
        sent = await self.current.send(data)
        if sent:
            self.recent.append(data)
        return sent


class SessionManager:
    """Opens and ends sessions and runs the reconnect handoff."""

    def __init__(self, state: EmulatorState, on_shards_disabled: Callable[[list[Shard]], None]) -> None:
        self.state = state
        self.settings = state.settings
        self.on_shards_disabled = on_shards_disabled
        self.reconnect_tokens: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def open(self, connection: Connection, keepalive_s: int) -> Session:
        session = Session(connection, keepalive_s, self.settings.reconnect_overlap_resend, self.settings.expect_pongs)
        self.state.sessions[session.id] = session
        self.state.counters.sessions_opened += 1
        logger.info("session %s opened (keepalive %d s)", session.id, keepalive_s)
        await connection.send(frames.welcome(session.id, session.connected_at, keepalive_s, timestamp=self.state.timestamp()))
        return session

    async def start_reconnect(self, session: Session) -> bool:
        """Send session_reconnect and start the grace timer; False if the session cannot reconnect now."""
        if session.state != "connected" or session.current.silent:
            return False
        token = secrets.token_urlsafe(18)
        self.reconnect_tokens[token] = session
        session.reconnect_token = token
        session.state = "reconnecting"
        url = f"ws://{session.current.host}/ws?reconnect={token}"
        grace_s = self.settings.real_s(self.settings.reconnect_grace_s)
        loop = asyncio.get_running_loop()
        session.grace_handle = loop.call_later(grace_s, self._on_grace_expired, session, token)
        logger.info("session %s asked to reconnect", session.id)
        await session.current.send(frames.reconnect(session.id, session.connected_at, url, timestamp=self.state.timestamp()))
        return True

    def claim(self, token: str) -> Session | None:
        """Return the session waiting for this reconnect token and consume the token."""
        session = self.reconnect_tokens.pop(token, None)
        if session is None or session.state != "reconnecting" or session.id not in self.state.sessions:
            return None
        return session

    async def attach(self, session: Session, connection: Connection) -> None:
        """Move ``session`` to ``connection``: welcome, overlap resend, then close the old socket."""
        old = session.current
        old.handed_off = True
        connection.session = session
        session.current = connection
        session.state = "connected"
        session.reconnect_token = None
        if session.grace_handle is not None:
            session.grace_handle.cancel()
            session.grace_handle = None
        logger.info("session %s reconnected on a new socket", session.id)
        await connection.send(
            frames.welcome(session.id, session.connected_at, session.keepalive_s, timestamp=self.state.timestamp())
        )
        await self._resend_overlap(session, connection)
        self.spawn(self._close_old(old), name=f"session {session.id} close old socket")

    async def _resend_overlap(self, session: Session, connection: Connection) -> None:
        # Twitch may deliver a message on both sockets during the overlap, with the same
        # message_id; the last few messages of the old socket are sent again to model it.
        for data in list(session.recent):
            if await connection.send(data):
                self.state.counters.overlap_resent += 1
                self.state.counters.delivered += 1

    async def _close_old(self, old: Connection) -> None:
        await asyncio.sleep(OLD_SOCKET_CLOSE_DELAY_S * min(1.0, self.settings.time_scale))
        if not old.ws.closed:
            await old.ws.close(code=1000, message=b"reconnected")

    def _on_grace_expired(self, session: Session, token: str) -> None:
        if session.reconnect_token != token:
            return
        self.reconnect_tokens.pop(token, None)
        session.reconnect_token = None
        logger.info("session %s did not reconnect within the grace time", session.id)
        self.spawn(
            session.current.close(4004, "reconnect grace time expired", self.state.counters),
            name=f"session {session.id} grace expired",
        )

    def connection_ended(self, connection: Connection) -> None:
        """Record the end of a socket; ends the session unless the socket was handed off."""
        session = connection.session
        if session is None or connection.handed_off or session.current is not connection:
            return
        self.state.sessions.pop(session.id, None)
        session.state = "closed"
        if session.reconnect_token is not None:
            self.reconnect_tokens.pop(session.reconnect_token, None)
            session.reconnect_token = None
        if session.grace_handle is not None:
            session.grace_handle.cancel()
        status = connection.end_status or DISCONNECTED
        disabled = self.state.disable_session_shards(session.id, status)
        subscriptions = self.state.disable_session_subscriptions(session.id, status)
        logger.info("session %s closed, %d shards and %d websocket subscriptions now %s",
                    session.id, len(disabled), subscriptions, status)
        if disabled:
            self.on_shards_disabled(disabled)

    def select(self, session_ids: list[str] | None, shard_ids: list[str] | None, everything: bool) -> list[Session]:
        """Return open sessions named directly, through their shard ids, or all."""
        sessions = self.state.sessions
        if everything:
            return list(sessions.values())
        chosen: dict[str, Session] = {}
        for session_id in session_ids or ():
            if session_id in sessions:
                chosen[session_id] = sessions[session_id]
        wanted = set(shard_ids or ())
        if wanted:
            for conduit in self.state.conduits.values():
                for shard in conduit.shards:
                    if shard.id in wanted and shard.session_id in sessions:
                        chosen[shard.session_id] = sessions[shard.session_id]
        return list(chosen.values())
