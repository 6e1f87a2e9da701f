"""Application assembly and the ``serve`` entry point."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from . import control, helix_conduits, helix_subscriptions, oauth
from .appkeys import FAULTS_KEY, GENERATORS_KEY, HOUSEKEEPER_KEY, MANAGER_KEY, ROUTER_KEY, STATE_KEY
from .faults import FaultStore
from .generator import GeneratorRegistry
from .helix_base import helix_middleware
from .housekeeping import Housekeeper
from .routing import Router
from .sessions import SessionManager
from .settings import EmulatorSettings
from .state import EmulatorState
from .websocket import make_handler

logger = logging.getLogger(__name__)


def create_app(settings: EmulatorSettings) -> web.Application:
    """Build the emulator application: OAuth, Helix, EventSub WebSocket and control API."""
    state = EmulatorState(settings)
    router = Router(state)
    manager = SessionManager(state, router.on_shards_disabled)
    router.manager = manager

    app = web.Application()
    app[STATE_KEY] = state
    app[FAULTS_KEY] = FaultStore()
    app[ROUTER_KEY] = router
    app[MANAGER_KEY] = manager
    app[GENERATORS_KEY] = GeneratorRegistry(state, router)

    oauth.add_routes(app)
    app.router.add_get("/ws", make_handler(state, manager))
    helix = web.Application(middlewares=[helix_middleware])
    helix_conduits.add_routes(helix)
    helix_subscriptions.add_routes(helix)
    app.add_subapp("/helix", helix)
    app.add_subapp("/_emulator", control.create_control_app())
    housekeeper = Housekeeper(state)
    app[HOUSEKEEPER_KEY] = housekeeper
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    return app


async def _startup(app: web.Application) -> None:
    app[HOUSEKEEPER_KEY].start()


async def _shutdown(app: web.Application) -> None:
    await app[HOUSEKEEPER_KEY].close()
    await app[GENERATORS_KEY].stop_all()
    state = app[STATE_KEY]
    for session in list(state.sessions.values()):
        if not session.current.ws.closed:
            await session.current.ws.close(code=1001, message=b"emulator shutting down")
    await app[MANAGER_KEY].cancel_tasks()


async def serve(settings: EmulatorSettings, ready: asyncio.Event | None = None) -> None:
    """Run the emulator until cancelled, then shut it down cleanly."""
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        logger.info("emulator listening on http://%s:%d", host, port)
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        logger.info("emulator stopped")
