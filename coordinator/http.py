"""The coordinator's HTTP server, on every replica: health, liveness, metrics, the JSON API, the dashboard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as redis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.settings import Settings
from . import metrics
from .auth import bearer_middleware
from .views import ApiViews, json_response

DASHBOARD_DIR = Path(__file__).parent / "dashboard"
LANGUAGES = ("en", "ja")
LOOP_TICK_S = 1.0
# /livez fails when the event loop has not run the ticker for this long: the process is stuck.
LOOP_STALL_S = 15.0
DASHBOARD_CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


def preferred_language(accept_language: str) -> str:
    """Return "ja" when Accept-Language ranks Japanese above English, else "en"."""
    ranked = []
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else "en"


class LoopHeartbeat:
    """Ticks on the event loop; a stale tick means the loop is blocked or starved."""

    def __init__(self) -> None:
        self.last_tick_s = time.monotonic()
        self._task: asyncio.Task | None = None

    async def start(self, app: web.Application) -> None:
        self._task = asyncio.create_task(self._run(), name="event loop heartbeat")

    async def stop(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self.last_tick_s = time.monotonic()
            await asyncio.sleep(LOOP_TICK_S)

    def age_s(self) -> float:
        return time.monotonic() - self.last_tick_s


def create_api(settings: Settings, client: redis.Redis, status: Callable[[], dict]) -> web.Application:
    """Build the aiohttp application; `status()` returns this replica's leader state."""
    app = web.Application(middlewares=[bearer_middleware(settings.api_token)], client_max_size=16 * 1024 * 1024)
    heartbeat = LoopHeartbeat()
    app.on_startup.append(heartbeat.start)
    app.on_cleanup.append(heartbeat.stop)
    index_template = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")

    async def healthz(request: web.Request) -> web.Response:
        try:
            await client.ping()
        except (redis.RedisError, OSError) as exc:
            return web.json_response({"ok": False, "error": f"redis unreachable: {exc}"}, status=503)
        return json_response({"ok": True, **status()})

    async def livez(request: web.Request) -> web.Response:
        age_s = round(heartbeat.age_s(), 3)
        if age_s > LOOP_STALL_S:
            return json_response({"ok": False, "error": f"event loop stalled for {age_s} s"}, 503)
        return json_response({"ok": True, "loop_tick_age_s": age_s})

    async def prometheus(request: web.Request) -> web.Response:
        current = status()
        metrics.LEADER.set(1 if current.get("leader") else 0)
        metrics.LEADER_EPOCH.set(current.get("epoch") or 0)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def dashboard(request: web.Request) -> web.Response:
        language = request.query.get("lang")
        if language not in LANGUAGES:
            language = preferred_language(request.headers.get("Accept-Language", ""))
        body = index_template.replace("{{lang}}", language)
        return web.Response(text=body, content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-cache",
                                     "Vary": "Accept-Language"})

    app.router.add_get("/", dashboard)
    app.router.add_static("/dashboard/", DASHBOARD_DIR, show_index=False, append_version=False)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", prometheus)
    ApiViews(settings, client).add_routes(app)
    return app
