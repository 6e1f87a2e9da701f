"""A worker's small HTTP server: Prometheus `/metrics` and `/healthz` with its statistics."""

from __future__ import annotations

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


async def start_metrics_server(host: str, port: int, statistics) -> tuple[web.AppRunner, int]:
    """Serve /metrics and /healthz on host:port; return the runner and the bound port."""
    app = web.Application()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"ok": True, **statistics()}), content_type="application/json")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]
