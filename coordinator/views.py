"""JSON endpoints of the coordinator API (`/api/...`), read from Redis so every replica can serve them."""

from __future__ import annotations

import collections
import logging
import time

import msgspec
import orjson
import redis.asyncio as redis
from aiohttp import web

from common.alerts import read_alerts
from common.channels import (
    BLOCKED_BY_COST, FAILED, NEEDS_RECONSENT, VERSION_REMOVED, ChannelError, ChannelStore, EntryStateStore,
    make_channel,
)
from common.keys import Keys
from common.legacy import LegacyCapacityError
from common.migration import MigrationError, send_command, status_report
from common.models import NEEDS_HUMAN_STATUSES, ShardState, Subscription
from common.settings import Settings

MAX_CHANNELS_PER_REQUEST = 10_000
SUBSCRIPTIONS_CACHE_S = 10.0
# Seconds a migration command request waits for the controller's response before it returns 503. It is
# shorter than the CLI's 30 s, so an HTTP client is not held long while no leader runs.
MIGRATION_COMMAND_TIMEOUT_S = 10.0
# Body fields that each migration command accepts, with their type.
MIGRATION_COMMAND_FIELDS = {"start": {"phase": int}, "pause": {}, "resume": {}, "rollback": {"all": bool}}
_TYPE_NAMES = {int: "whole number", bool: "boolean (true or false)"}

log = logging.getLogger(__name__)

_state_decoder = msgspec.json.Decoder(ShardState)
_subscription_decoder = msgspec.json.Decoder(Subscription)
_channel_encoder = msgspec.json.Encoder()


def json_response(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def _int_query(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise web.HTTPBadRequest(text=orjson.dumps({"error": f"invalid {name}={raw!r}: expected a whole number"}).decode(),
                                 content_type="application/json")
    return min(int(raw), maximum)


def channels_from_body(body) -> list:
    """Validate a POST /api/channels body: a list of channel objects, or {"channels": [...]}."""
    if isinstance(body, dict) and "channels" in body:
        body = body["channels"]
    if not isinstance(body, list) or not body:
        raise ChannelError("expected a non-empty JSON list of channels, e.g. [{\"broadcaster_user_id\": \"12826\"}]")
    if len(body) > MAX_CHANNELS_PER_REQUEST:
        raise ChannelError(f"too many channels in one request ({len(body)}): send at most {MAX_CHANNELS_PER_REQUEST}")
    channels = []
    for index, item in enumerate(body):
        if not isinstance(item, dict) or "broadcaster_user_id" not in item:
            raise ChannelError(f"channel {index}: expected an object with broadcaster_user_id")
        types = item.get("types") or []
        if isinstance(types, str):
            types = types.split(",")
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise ChannelError(f"channel {index}: types must be a list of 'type:version' strings")
        try:
            channels.append(make_channel(
                str(item["broadcaster_user_id"]), login=str(item.get("login") or ""),
                display_name=str(item.get("display_name") or ""), types=types,
                transport_mode=str(item.get("transport_mode") or "conduit")))
        except ValueError as exc:
            raise ChannelError(f"channel {index}: {exc}") from exc
    return channels


def mode_change_from_body(body) -> tuple[str, list[str]]:
    """Validate a POST /api/channels/mode body and return the mode and the broadcaster ids."""
    if not isinstance(body, dict):
        raise ChannelError('expected a JSON object, e.g. {"mode": "both", "broadcaster_ids": ["12826"]}')
    mode = body.get("mode")
    if not isinstance(mode, str):
        raise ChannelError("missing mode: expected one of websocket, both, conduit")
    ids = body.get("broadcaster_ids")
    if not isinstance(ids, list) or not ids:
        raise ChannelError("missing broadcaster_ids: expected a non-empty list of numeric Twitch user ids")
    if len(ids) > MAX_CHANNELS_PER_REQUEST:
        raise ChannelError(f"too many broadcaster ids in one request ({len(ids)}): send at most {MAX_CHANNELS_PER_REQUEST}")
    validated = []
    for index, broadcaster in enumerate(ids):
        if isinstance(broadcaster, bool) or not isinstance(broadcaster, (str, int)):
            raise ChannelError(f"broadcaster_ids[{index}]: expected a numeric Twitch user id, got {broadcaster!r}")
        try:
            validated.append(make_channel(str(broadcaster)).broadcaster_user_id)
        except ChannelError as exc:
            raise ChannelError(f"broadcaster_ids[{index}]: {exc}") from exc
    return mode, list(dict.fromkeys(validated))


def migration_options_from_body(command: str, body) -> dict:
    """Validate the optional body of POST /api/migration/<command> and return its fields."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise MigrationError(f"expected a JSON object as the body of {command}, or no body")
    accepted = MIGRATION_COMMAND_FIELDS[command]
    unknown = sorted(set(body) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) or "no fields"
        raise MigrationError(f"unknown field {unknown[0]!r} for {command}: it accepts {allowed}")
    for name, kind in accepted.items():
        if name in body and type(body[name]) is not kind:
            raise MigrationError(f"invalid {name}={body[name]!r} for {command}: expected a {_TYPE_NAMES[kind]}")
    return body


class ApiViews:
    """Handlers of the `/api/...` routes."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self._settings = settings
        self._client = client
        self._keys = Keys(settings.key_prefix)
        self._channels = ChannelStore(client, self._keys, settings)
        self._subscriptions_cache: tuple[float, dict] | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/stats", self.stats)
        app.router.add_get("/api/shards", self.shards)
        app.router.add_get("/api/workers", self.workers)
        app.router.add_get("/api/subscriptions", self.subscriptions)
        app.router.add_get("/api/channels", self.list_channels)
        app.router.add_post("/api/channels", self.add_channels)
        app.router.add_post("/api/channels/mode", self.set_channel_mode)
        app.router.add_delete("/api/channels/{broadcaster_id}", self.remove_channel)
        app.router.add_get("/api/alerts", self.alerts)
        app.router.add_get("/api/migration", self.migration)
        for command in MIGRATION_COMMAND_FIELDS:
            app.router.add_post(f"/api/migration/{command}", self.migration_command(command))
        app.router.add_get("/api/history", self.history)

    async def stats(self, request: web.Request) -> web.Response:
        raw = await self._client.get(self._keys.stats)
        if raw is None:
            return error_response(503, "no stats yet: the leader publishes them a few seconds after start")
        return web.Response(body=raw, content_type="application/json")

    async def shards(self, request: web.Request) -> web.Response:
        assignment = {k.decode(): v.decode() for k, v in (await self._client.hgetall(self._keys.assignment)).items()}
        states = {k.decode(): _state_decoder.decode(v) for k, v in (await self._client.hgetall(self._keys.shards)).items()}
        status_filter = request.query.get("status")
        rows = []
        for shard_id in sorted(set(assignment) | set(states), key=int):
            state = states.get(shard_id, ShardState())
            row = {"id": shard_id, "worker": assignment.get(shard_id, ""), "session_id": state.session_id,
                   "status": state.status, "bound_at_ms": state.bound_at_ms, "changed_at_ms": state.changed_at_ms}
            if status_filter and row["status"] != status_filter:
                continue
            rows.append(row)
        return json_response({"data": rows, "total": len(rows)})

    async def workers(self, request: web.Request) -> web.Response:
        now_ms = int(time.time() * 1000)
        counts = collections.Counter(worker.decode() for worker in (await self._client.hgetall(self._keys.assignment)).values())
        rows = []
        for worker, deadline in await self._client.zrange(self._keys.workers, 0, -1, withscores=True):
            worker_id = worker.decode()
            info = {k.decode(): v.decode() for k, v in (await self._client.hgetall(self._keys.worker_info(worker_id))).items()}
            heartbeat_ms = int(info.get("heartbeat_ms", 0))
            rows.append({
                "id": worker_id, "shards": counts.get(worker_id, 0), "lease_deadline_ms": int(deadline),
                "heartbeat_age_s": round((now_ms - heartbeat_ms) / 1000, 2) if heartbeat_ms else None,
                "host": info.get("host", ""), "pid": int(info.get("pid", 0) or 0),
                "draining": info.get("draining") == "1",
                "published": int(info.get("published", 0) or 0), "duplicates": int(info.get("duplicates", 0) or 0),
            })
        return json_response({"data": rows, "total": len(rows)})

    async def subscriptions(self, request: web.Request) -> web.Response:
        limit = _int_query(request, "limit", 100, 10_000)
        summary = await self._subscription_summary()
        return json_response({
            **{key: value for key, value in summary.items() if key not in ("failed", "needs_reconsent")},
            "failed": summary["failed"][:limit],
            "needs_reconsent": summary["needs_reconsent"][:limit],
        })

    async def _subscription_summary(self) -> dict:
        # Cached briefly: the dashboard polls every few seconds and the hash may hold 100,000 entries.
        cached = self._subscriptions_cache
        if cached is not None and time.monotonic() - cached[0] < SUBSCRIPTIONS_CACHE_S:
            return cached[1]
        by_status: collections.Counter[str] = collections.Counter()
        by_type: collections.Counter[str] = collections.Counter()
        needs_reconsent = []
        total = 0
        async for _, raw in self._client.hscan_iter(self._keys.subscriptions, count=1000):
            sub = _subscription_decoder.decode(raw)
            total += 1
            by_status[sub.status] += 1
            by_type[f"{sub.type}:{sub.version}"] += 1
            if sub.status in NEEDS_HUMAN_STATUSES:
                needs_reconsent.append({"id": sub.id, "type": sub.type, "version": sub.version,
                                        "condition": sub.condition, "reason": sub.status})
        # The reconciler records why a desired subscription is missing: failed, blocked by cost, or
        # waiting for the broadcaster's consent again (the dead subscription itself is deleted).
        failed = []
        for state in (await EntryStateStore(self._client, self._keys).load()).values():
            row = {"type": state.type, "version": state.version, "condition": state.condition,
                   "reason": state.reason, "state": state.state}
            if state.state in (NEEDS_RECONSENT, VERSION_REMOVED):
                needs_reconsent.append({"id": state.subscription_id, **row})
            elif state.state in (FAILED, BLOCKED_BY_COST):
                failed.append(row)
        summary = {
            "total": total, "by_status": dict(by_status), "by_type": dict(by_type),
            "failed_total": len(failed), "needs_reconsent_total": len(needs_reconsent),
            "failed": sorted(failed, key=lambda row: (row["type"], str(row["condition"]))),
            "needs_reconsent": sorted(needs_reconsent, key=lambda row: (row["type"], str(row["condition"]))),
        }
        self._subscriptions_cache = (time.monotonic(), summary)
        return summary

    async def list_channels(self, request: web.Request) -> web.Response:
        limit = _int_query(request, "limit", 1000, 100_000)
        offset = _int_query(request, "offset", 0, 10**9)
        channels = await self._channels.list()
        page = []
        for channel in channels[offset:offset + limit]:
            # The encoder leaves out default fields, but the mode and the fallback flag are always shown.
            row = orjson.loads(_channel_encoder.encode(channel))
            row["transport_mode"] = channel.transport_mode
            row["fallback"] = channel.fallback
            page.append(row)
        return json_response({"data": page, "total": len(channels)})

    async def add_channels(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return error_response(400, f"invalid JSON body: {exc}")
        try:
            channels = channels_from_body(body)
        except ChannelError as exc:
            return error_response(400, str(exc))
        try:
            stored = await self._channels.add(channels)
        except LegacyCapacityError as exc:
            return error_response(400, str(exc))
        return json_response({"stored": stored})

    async def set_channel_mode(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return error_response(400, f"invalid JSON body: {exc}")
        try:
            mode, ids = mode_change_from_body(body)
            # A manual change clears the fallback mark, so the controller leaves the channel where it is put.
            changed = await self._channels.set_mode(ids, mode, fallback=False)
        except (ChannelError, LegacyCapacityError) as exc:
            return error_response(400, str(exc))
        log.info("API set %d of %d channels to transport mode %s", len(changed), len(ids), mode)
        return json_response({"mode": mode, "changed": len(changed), "unchanged": len(ids) - len(changed)})

    async def remove_channel(self, request: web.Request) -> web.Response:
        broadcaster_id = request.match_info["broadcaster_id"]
        if not broadcaster_id.isdigit():
            return error_response(400, f"invalid broadcaster id {broadcaster_id!r}: expected a numeric Twitch user id")
        if not await self._channels.remove([broadcaster_id]):
            return error_response(404, f"channel {broadcaster_id} not found")
        return json_response({"removed": broadcaster_id})

    async def alerts(self, request: web.Request) -> web.Response:
        recent = _int_query(request, "recent", 50, 1000)
        return json_response(await read_alerts(self._client, self._keys, recent))

    async def migration(self, request: web.Request) -> web.Response:
        report = await status_report(self._client, self._settings)
        # The legacy load is keyed by slot number, and OPT_NON_STR_KEYS writes those keys as JSON strings.
        return web.Response(body=orjson.dumps(report, option=orjson.OPT_NON_STR_KEYS), content_type="application/json")

    def migration_command(self, command: str):
        """Return the handler of POST /api/migration/<command>, which queues it for the leader's controller."""

        async def handler(request: web.Request) -> web.Response:
            raw = await request.read()
            try:
                body = orjson.loads(raw) if raw.strip() else None
            except orjson.JSONDecodeError as exc:
                return error_response(400, f"invalid JSON body: {exc}")
            try:
                options = migration_options_from_body(command, body)
                if options.get("phase") is not None:
                    phases = len(self._settings.phase_targets)
                    if not 1 <= options["phase"] <= phases:
                        raise MigrationError(f"invalid phase {options['phase']}: expected 1 to {phases} "
                                             f"(CF_MIGRATION_PHASES={self._settings.migration_phases})")
            except MigrationError as exc:
                return error_response(400, str(exc))
            try:
                response = await send_command(self._client, self._settings, command, phase=options.get("phase", 0),
                                              all_channels=options.get("all", False),
                                              timeout_s=MIGRATION_COMMAND_TIMEOUT_S)
            except MigrationError as exc:
                log.info("API migration %s rejected by the controller: %s", command, exc)
                return error_response(409, str(exc))
            except TimeoutError as exc:
                log.warning("API migration %s: %s", command, exc)
                return error_response(503, str(exc))
            log.info("API migration %s: %s", command, response.get("message", ""))
            return json_response({"ok": True, "message": response.get("message", "")})

        return handler

    async def history(self, request: web.Request) -> web.Response:
        raw = await self._client.lrange(self._keys.history, 0, -1)
        samples = [orjson.loads(item) for item in reversed(raw)]
        rows = []
        previous = None
        for sample in samples:
            rate = None
            if previous is not None and sample["t_ms"] > previous["t_ms"]:
                # A counter that went down was reset (for example a flushed Redis): no rate for that step.
                delta = sample["published"] - previous["published"]
                rate = round(delta * 1000 / (sample["t_ms"] - previous["t_ms"]), 2) if delta >= 0 else None
            rows.append({"t_ms": sample["t_ms"], "events_per_s": rate, "stream_length": sample["stream_length"],
                         "published": sample["published"]})
            previous = sample
        return json_response({"interval_s": self._settings.alert_interval_s, "samples": rows})
