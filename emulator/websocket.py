"""The EventSub WebSocket endpoint ``GET /ws``."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMsgType, web

from . import frames
from .sessions import Connection, Session, SessionManager
from .settings import EmulatorSettings
from .state import EmulatorState

logger = logging.getLogger(__name__)

# keepalive_timeout_seconds accepts 10..600 and clamps other numbers (WebSocket reference).
KEEPALIVE_MIN_S = 10
KEEPALIVE_MAX_S = 600
KEEPALIVE_DEFAULT_S = 10
MAX_INBOUND_MESSAGE_BYTES = 64 * 1024


def parse_keepalive(raw: str | None) -> int:
    """Return the clamped keepalive; raise ValueError for a value that is not an integer."""
    if raw is None:
        return KEEPALIVE_DEFAULT_S
    value = int(raw)
    return max(KEEPALIVE_MIN_S, min(KEEPALIVE_MAX_S, value))


def make_handler(state: EmulatorState, manager: SessionManager):
    async def handle_ws(request: web.Request) -> web.StreamResponse:
        try:
            keepalive_s = parse_keepalive(request.query.get("keepalive_timeout_seconds"))
        except ValueError:
            raise web.HTTPBadRequest(text="keepalive_timeout_seconds must be an integer (10..600)") from None
        ws = web.WebSocketResponse(autoping=False, max_msg_size=MAX_INBOUND_MESSAGE_BYTES)
        await ws.prepare(request)
        connection = Connection(ws, request.transport, request.host)
        token = request.query.get("reconnect")
        if token is not None:
            session = manager.claim(token)
            if session is None:
                logger.info("rejected an invalid or used reconnect URL")
                await connection.close(4007, "invalid reconnect", state.counters)
                return ws
            await manager.attach(session, connection)
        else:
            session = await manager.open(connection, keepalive_s)
        watchdog = asyncio.create_task(
            _watch(connection, session, state.settings, state), name=f"session {session.id} watchdog"
        )
        try:
            await _read(connection, state)
        finally:
            watchdog.cancel()
            manager.connection_ended(connection)
        return ws

    return handle_ws


async def _read(connection: Connection, state: EmulatorState) -> None:
    ws = connection.ws
    async for message in ws:
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            if connection.silent:
                continue
            # Twitch accepts nothing from the client but Pong frames and closes with 4001.
            logger.info("session %s closed: client sent a %s frame", connection.session.id if connection.session else "?", message.type.name)
            await connection.close(4001, "client sent inbound traffic", state.counters)
            return
        if message.type == WSMsgType.PING:
            # NOTE: Twitch's docs would close on a client Ping too; the emulator answers it.
            await ws.pong(message.data)
        elif message.type == WSMsgType.PONG:
            connection.last_pong = time.monotonic()
            if connection.session is not None:
                connection.session.counters["pongs_received"] += 1


async def _watch(connection: Connection, session: Session, settings: EmulatorSettings, state: EmulatorState) -> None:
    """Send keepalives and pings, and enforce the bind deadline and the ping-pong answer."""
    keepalive_real_s = settings.real_s(session.keepalive_s)
    # NOTE: Twitch documents no ping interval; the default is the keepalive timeout.
    ping_interval_s = settings.real_s(settings.ping_interval_s or session.keepalive_s)
    bind_deadline_at = session.welcome_at + settings.real_s(settings.bind_deadline_s)
    next_ping_at = time.monotonic() + ping_interval_s
    while not connection.ws.closed:
        now = time.monotonic()
        if connection.silent or session.current is not connection:
            await asyncio.sleep(keepalive_real_s)
            continue
        # Twitch closes a session that no shard uses and that got no subscription within
        # 10 s of its welcome with 4003 (WebSocket reference; for conduits the code is
        # assumed, since the docs give none).
        if not session.ever_bound and now >= bind_deadline_at:
            logger.info("session %s closed: not bound within the bind deadline", session.id)
            await connection.close(4003, "connection unused", state.counters)
            return
        if not await _check_ping(connection, now, ping_interval_s, state):
            return
        if now >= next_ping_at:
            connection.ping_sent_at = now
            next_ping_at = now + ping_interval_s
            session.counters["pings_sent"] += 1
            await _ping(connection)
        keepalive_at = connection.last_sent + keepalive_real_s
        if now >= keepalive_at:
            session.counters["keepalives"] += 1
            await connection.send(frames.keepalive(timestamp=state.timestamp()))
            keepalive_at = connection.last_sent + keepalive_real_s
        wake_at = min(keepalive_at, next_ping_at)
        if not session.ever_bound:
            wake_at = min(wake_at, bind_deadline_at)
        await asyncio.sleep(max(0.001, wake_at - time.monotonic()))


async def _check_ping(connection: Connection, now: float, interval_s: float, state: EmulatorState) -> bool:
    sent_at = connection.ping_sent_at
    if sent_at is None or connection.last_pong >= sent_at or now - sent_at < interval_s:
        return True
    if connection.session is not None and not connection.session.expect_pongs:
        return True
    logger.info("session %s closed: no pong", connection.session.id if connection.session else "?")
    await connection.close(4002, "client failed ping-pong", state.counters)
    return False


async def _ping(connection: Connection) -> None:
    try:
        await connection.ws.ping()
    except (ConnectionError, RuntimeError):
        pass
