"""Control API for injected conditions: latency, delivery drops, malformed frames, pongs, rate limit,
authorization, conduit deletion and webhook shard statuses."""

from __future__ import annotations

import logging
import math
import random
from typing import Any

from aiohttp import web

from . import malformed
from .appkeys import MANAGER_KEY, STATE_KEY
from .control_input import optional_int, selection, string_list
from .helix_base import HelixError, json_response, read_json_object
from .models import ENABLED, WEBHOOK_PENDING
from .records import DELIVERY_TRANSPORTS
from .state import EmulatorState

logger = logging.getLogger(__name__)

# Statuses a webhook shard can take. The emulator never calls a callback, so a test sets them.
WEBHOOK_STATUSES = (
    ENABLED, WEBHOOK_PENDING, "webhook_callback_verification_failed", "notification_failures_exceeded",
)


def _state(request: web.Request) -> EmulatorState:
    return request.config_dict[STATE_KEY]


async def delete_conduit(request: web.Request) -> web.Response:
    state = _state(request)
    conduit_id = request.match_info["conduit_id"]
    conduit = state.conduits.get(conduit_id)
    if conduit is None:
        raise HelixError(404, f"conduit {conduit_id!r} not found")
    state.delete_conduit(conduit, reason="deleted through the control API")
    return json_response({"deleted": conduit_id})


async def deauthorize_users(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json_object(request)
    user_ids = string_list(body, "user_ids", required=True) or []
    state.deauthorized_user_ids.update(user_ids)
    state.authorized_user_ids.difference_update(user_ids)
    logger.info("%d users marked as not having authorized the app", len(user_ids))
    return json_response({"deauthorized_user_ids": sorted(state.deauthorized_user_ids)})


async def empty_rate_limit(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json_object(request) if request.can_read_body else {}
    client_id = body.get("client_id", state.settings.client_id)
    if not isinstance(client_id, str) or not client_id:
        raise HelixError(400, f"invalid client_id {client_id!r}: expected a non-empty string")
    state.bucket(client_id).empty()
    logger.info("rate-limit bucket of client %s emptied", client_id)
    return json_response({"client_id": client_id, "remaining": 0})


async def get_latency(request: web.Request) -> web.Response:
    state = _state(request)
    return json_response({"helix_ms": state.helix_latency_ms, "websocket_ms": state.websocket_latency_ms})


async def set_latency(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json_object(request)
    helix_ms = optional_int(body, "helix_ms", 0)
    websocket_ms = optional_int(body, "websocket_ms", 0)
    if helix_ms is None and websocket_ms is None:
        raise HelixError(400, "give helix_ms or websocket_ms (milliseconds >= 0)")
    if helix_ms is not None:
        state.helix_latency_ms = helix_ms
    if websocket_ms is not None:
        state.websocket_latency_ms = websocket_ms
    logger.info("latency set: helix %d ms, websocket %d ms", state.helix_latency_ms, state.websocket_latency_ms)
    return await get_latency(request)


async def get_delivery_drop(request: web.Request) -> web.Response:
    return json_response(dict(_state(request).delivery_drop_ratios))


async def set_delivery_drop(request: web.Request) -> web.Response:
    """Set the share of one transport's notifications that are lost without a trace. Ratio 0 turns it off."""
    state = _state(request)
    body = await read_json_object(request)
    transport = body.get("transport")
    if transport not in DELIVERY_TRANSPORTS:
        raise HelixError(400, f"invalid transport {transport!r}: expected \"conduit\" or \"websocket\"")
    if "ratio" not in body:
        raise HelixError(400, "missing ratio: expected a number from 0 to 1, e.g. 0.2")
    ratio = body["ratio"]
    is_number = isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
    if not is_number or not math.isfinite(ratio) or not 0 <= ratio <= 1:
        raise HelixError(400, f"invalid ratio {ratio!r}: expected a number from 0 to 1, e.g. 0.2")
    state.delivery_drop_ratios[transport] = float(ratio)
    logger.info("delivery drop for %s notifications set to %.3f", transport, ratio)
    return await get_delivery_drop(request)


async def send_malformed(request: web.Request) -> web.Response:
    state = _state(request)
    manager = request.config_dict[MANAGER_KEY]
    body = await read_json_object(request)
    session_ids, shard_ids, everything = selection(body)
    kind = body.get("kind")
    if kind not in malformed.KINDS:
        raise HelixError(400, f"invalid kind {kind!r}: expected one of {', '.join(malformed.KINDS)}")
    rng = random.Random()
    sent = []
    for session in manager.select(session_ids, shard_ids, everything):
        data, frame_type = malformed.build(kind, session, state, rng)
        if await session.current.send_raw(data, frame_type):
            session.counters["malformed_sent"] += 1
            sent.append(session.id)
    logger.info("malformed %s frame sent to %d sessions", kind, len(sent))
    return json_response({"session_ids": sent, "kind": kind})


async def set_pong_expectation(request: web.Request) -> web.Response:
    manager = request.config_dict[MANAGER_KEY]
    body = await read_json_object(request)
    session_ids, shard_ids, everything = selection(body)
    expect = body.get("expect")
    if not isinstance(expect, bool):
        raise HelixError(400, f"invalid expect {expect!r}: expected true or false")
    sessions = manager.select(session_ids, shard_ids, everything)
    for session in sessions:
        session.expect_pongs = expect
    logger.info("%d sessions now %s pongs", len(sessions), "expect" if expect else "ignore missing")
    return json_response({"session_ids": [session.id for session in sessions], "expect": expect})


def _webhook_shards(state: EmulatorState, body: dict[str, Any]) -> list[Any]:
    shard_ids = set(string_list(body, "shard_ids", required=True) or [])
    conduit_id = body.get("conduit_id")
    if conduit_id is not None and conduit_id not in state.conduits:
        raise HelixError(404, f"conduit {conduit_id!r} not found")
    conduits = [state.conduits[conduit_id]] if conduit_id else list(state.conduits.values())
    chosen = [shard for conduit in conduits for shard in conduit.shards if shard.id in shard_ids]
    not_webhook = sorted(shard.id for shard in chosen if shard.method != "webhook")
    if not_webhook:
        raise HelixError(400, f"shards {not_webhook} are not webhook shards: a websocket shard's status follows its socket")
    return chosen


async def set_webhook_shard_status(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json_object(request)
    status = body.get("status")
    if status not in WEBHOOK_STATUSES:
        raise HelixError(400, f"invalid status {status!r}: expected one of {', '.join(WEBHOOK_STATUSES)}")
    shards = _webhook_shards(state, body)
    for shard in shards:
        shard.status = status
    logger.info("%d webhook shards now %s", len(shards), status)
    return json_response({"shards": [{"conduit_id": shard.conduit_id, **shard.to_wire()} for shard in shards]})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/conduits/{conduit_id}/delete", delete_conduit)
    app.router.add_post("/deauthorize", deauthorize_users)
    app.router.add_post("/ratelimit/empty", empty_rate_limit)
    app.router.add_get("/latency", get_latency)
    app.router.add_post("/latency", set_latency)
    app.router.add_get("/delivery-drop", get_delivery_drop)
    app.router.add_post("/delivery-drop", set_delivery_drop)
    app.router.add_post("/sessions/malformed", send_malformed)
    app.router.add_post("/sessions/pongs", set_pong_expectation)
    app.router.add_post("/shards/status", set_webhook_shard_status)
