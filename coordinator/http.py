"""The coordinator's HTTP API, served by every replica: health, stats, shards, workers, metrics."""

from __future__ import annotations

import time

import msgspec
import orjson
import redis.asyncio as redis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.keys import Keys
from common.models import ShardState
from common.settings import Settings

_state_decoder = msgspec.json.Decoder(ShardState)


def _json(data) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def create_api(settings: Settings, client: redis.Redis, status: callable) -> web.Application:
    """Build the aiohttp application; `status()` returns this replica's leader state."""
    keys = Keys(settings.key_prefix)
    app = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        try:
            await client.ping()
        except (redis.RedisError, OSError) as exc:
            return web.json_response({"ok": False, "error": f"redis unreachable: {exc}"}, status=503)
        return _json({"ok": True, **status()})

    async def stats(request: web.Request) -> web.Response:
        raw = await client.get(keys.stats)
        if raw is None:
            return web.json_response({"error": "no stats yet: the leader publishes them a few seconds after start"}, status=503)
        return web.Response(body=raw, content_type="application/json")

    async def shards(request: web.Request) -> web.Response:
        assignment = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.assignment)).items()}
        states = {k.decode(): _state_decoder.decode(v) for k, v in (await client.hgetall(keys.shards)).items()}
        status_filter = request.query.get("status")
        rows = []
        for shard_id in sorted(set(assignment) | set(states), key=int):
            state = states.get(shard_id, ShardState())
            row = {"id": shard_id, "worker": assignment.get(shard_id, ""), "session_id": state.session_id,
                   "status": state.status, "bound_at_ms": state.bound_at_ms, "changed_at_ms": state.changed_at_ms}
            if status_filter and row["status"] != status_filter:
                continue
            rows.append(row)
        return _json({"data": rows, "total": len(rows)})

    async def workers(request: web.Request) -> web.Response:
        now_ms = int(time.time() * 1000)
        assignment = (await client.hgetall(keys.assignment)).values()
        counts: dict[str, int] = {}
        for worker in assignment:
            counts[worker.decode()] = counts.get(worker.decode(), 0) + 1
        rows = []
        for worker, deadline in await client.zrange(keys.workers, 0, -1, withscores=True):
            worker_id = worker.decode()
            info = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.worker_info(worker_id))).items()}
            heartbeat_ms = int(info.get("heartbeat_ms", 0))
            rows.append({
                "id": worker_id, "shards": counts.get(worker_id, 0), "lease_deadline_ms": int(deadline),
                "heartbeat_age_s": round((now_ms - heartbeat_ms) / 1000, 2) if heartbeat_ms else None,
                "host": info.get("host", ""), "pid": int(info.get("pid", 0) or 0),
                "published": int(info.get("published", 0) or 0), "duplicates": int(info.get("duplicates", 0) or 0),
            })
        return _json({"data": rows, "total": len(rows)})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/api/shards", shards)
    app.router.add_get("/api/workers", workers)
    app.router.add_get("/metrics", metrics)
    return app
