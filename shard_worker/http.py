"""A worker's small HTTP server: Prometheus `/metrics`, `/healthz` with its statistics, and `/readyz`."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


async def start_metrics_server(host: str, port: int, statistics: Callable[[], dict],
                               readiness: Callable[[], tuple[bool, dict]] | None = None) -> tuple[web.AppRunner, int]:
    """Serve /metrics, /healthz and /readyz on host:port; return the runner and the bound port.

    `readiness()` returns whether the worker is ready and the details to show, and /readyz returns 503
    when it is not.
    """
    app = web.Application()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"ok": True, **statistics()}), content_type="application/json")

    async def readyz(request: web.Request) -> web.Response:
        ready, details = readiness() if readiness is not None else (True, {})
        return web.Response(body=orjson.dumps({"ready": ready, **details}), status=200 if ready else 503,
                            content_type="application/json")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]
