"""Helix conduit and conduit-shard endpoints under ``/helix/eventsub/conduits``."""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from aiohttp import web

from .faults import FaultStore
from .helix_base import (
    FAULTS_KEY, STATE_KEY, HelixError, decode_cursor, encode_cursor, json_response, read_json_object,
    require_app_token,
)
from .state import Conduit, EmulatorState, Shard

logger = logging.getLogger(__name__)

NOT_CONNECTED = "The websocket session is not connected."
OUT_OF_RANGE = "The shard id is outside of the conduit's range."
WEBHOOK_SECRET_LENGTH = (10, 100)


def _state(request: web.Request) -> EmulatorState:
    return request.config_dict[STATE_KEY]


def _shard_count(state: EmulatorState, value: Any) -> int:
    limit = state.settings.max_shards
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise HelixError(400, f"invalid shard_count {value!r}: expected an integer from 1 to {limit}")
    return value


def _owned_conduit(state: EmulatorState, client_id: str, conduit_id: Any) -> Conduit:
    conduit = state.conduits.get(conduit_id) if isinstance(conduit_id, str) else None
    if conduit is None or conduit.client_id != client_id:
        raise HelixError(404, f"conduit {conduit_id!r} not found")
    return conduit


async def _conduit_body(request: web.Request, state: EmulatorState, names: tuple[str, ...]) -> dict[str, Any]:
    """Return the JSON body. With ``query_fields_as_body``, fill missing ``names`` from the query string.

    Twitch's reference puts these fields in the body. TwitchIO 3 sends them as query
    parameters, which the setting accepts for running that client here.
    """
    if not state.settings.query_fields_as_body:
        return await read_json_object(request)
    body = await read_json_object(request) if request.can_read_body else {}
    for name in names:
        if name in body or name not in request.query:
            continue
        raw = request.query[name]
        body[name] = int(raw) if name == "shard_count" and raw.isdigit() else raw
    return body


async def list_conduits(request: web.Request) -> web.Response:
    token = require_app_token(request)
    conduits = _state(request).conduits_of(token.client_id)
    return json_response({"data": [conduit.to_wire() for conduit in conduits]})


async def create_conduit(request: web.Request) -> web.Response:
    token = require_app_token(request)
    state = _state(request)
    body = await _conduit_body(request, state, ("shard_count",))
    shard_count = _shard_count(state, body.get("shard_count"))
    if len(state.conduits_of(token.client_id)) >= state.settings.max_conduits:
        raise HelixError(429, "conduit limit reached")
    conduit = state.create_conduit(token.client_id, shard_count)
    return json_response({"data": [conduit.to_wire()]})


async def update_conduit(request: web.Request) -> web.Response:
    token = require_app_token(request)
    state = _state(request)
    body = await _conduit_body(request, state, ("id", "shard_count"))
    if not isinstance(body.get("id"), str):
        raise HelixError(400, "missing conduit id")
    shard_count = _shard_count(state, body.get("shard_count"))
    conduit = _owned_conduit(state, token.client_id, body["id"])
    state.resize_conduit(conduit, shard_count)
    return json_response({"data": [conduit.to_wire()]})


async def delete_conduit(request: web.Request) -> web.Response:
    token = require_app_token(request)
    state = _state(request)
    conduit_id = request.query.get("id")
    if not conduit_id:
        raise HelixError(400, "missing query parameter id")
    conduit = _owned_conduit(state, token.client_id, conduit_id)
    state.delete_conduit(conduit)
    return web.Response(status=204)


async def list_shards(request: web.Request) -> web.Response:
    token = require_app_token(request)
    state = _state(request)
    conduit_id = request.query.get("conduit_id")
    if not conduit_id:
        raise HelixError(400, "missing query parameter conduit_id")
    conduit = _owned_conduit(state, token.client_id, conduit_id)
    status = request.query.get("status")
    start = decode_cursor(request.query.get("after"))
    matching = [shard for shard in conduit.shards[start:] if status is None or shard.status == status]
    page = matching[: state.settings.page_size]
    pagination: dict[str, str] = {}
    if len(matching) > len(page):
        next_index = int(page[-1].id) + 1
        pagination["cursor"] = encode_cursor(next_index)
    return json_response({"data": [shard.to_wire() for shard in page], "pagination": pagination})


def _validate_shard_entry(entry: Any) -> None:
    """Raise a 400 HelixError for an entry that fails the whole request."""
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        raise HelixError(400, "each shard needs a string id")
    transport = entry.get("transport")
    if not isinstance(transport, dict):
        raise HelixError(400, f"shard {entry['id']}: missing transport")
    method = transport.get("method")
    if method == "websocket":
        if not isinstance(transport.get("session_id"), str) or not transport["session_id"]:
            raise HelixError(400, f"shard {entry['id']}: websocket transport needs session_id")
        return
    if method == "webhook":
        _validate_webhook(entry["id"], transport)
        return
    raise HelixError(400, f"shard {entry['id']}: invalid transport method {method!r}: expected websocket or webhook")


def _validate_webhook(shard_id: str, transport: dict[str, Any]) -> None:
    callback = transport.get("callback")
    if not isinstance(callback, str) or not callback.startswith("https://"):
        raise HelixError(400, f"shard {shard_id}: webhook callback must be an https:// URL")
    # The API reference requires HTTPS on port 443 for the callback.
    try:
        port = urllib.parse.urlsplit(callback).port
    except ValueError:
        raise HelixError(400, f"shard {shard_id}: invalid webhook callback {callback!r}") from None
    if port not in (None, 443):
        raise HelixError(400, f"shard {shard_id}: webhook callback must use port 443, got {port}")
    secret = transport.get("secret")
    low, high = WEBHOOK_SECRET_LENGTH
    if not isinstance(secret, str) or not low <= len(secret) <= high:
        raise HelixError(400, f"shard {shard_id}: webhook secret must be {low} to {high} characters")


def _shard_at(conduit: Conduit, shard_id: str) -> Shard | None:
    if not shard_id.isdigit() or int(shard_id) >= len(conduit.shards):
        return None
    return conduit.shards[int(shard_id)]


def _apply_entry(state: EmulatorState, conduit: Conduit, entry: dict[str, Any], failing: set[str]) -> str | None:
    """Apply one shard update; return the error message, or None when the shard was updated."""
    shard = _shard_at(conduit, entry["id"])
    if shard is None:
        return OUT_OF_RANGE
    transport = entry["transport"]
    if transport["method"] == "webhook":
        state.bind_webhook_shard(shard, transport["callback"])
        return None
    session = state.sessions.get(transport["session_id"])
    if entry["id"] in failing or session is None:
        return NOT_CONNECTED
    state.bind_websocket_shard(shard, session)
    return None


async def update_shards(request: web.Request) -> web.Response:
    token = require_app_token(request)
    state = _state(request)
    faults: FaultStore = request.config_dict[FAULTS_KEY]
    body = await _conduit_body(request, state, ("conduit_id",))
    if not isinstance(body.get("conduit_id"), str):
        raise HelixError(400, "missing conduit_id")
    entries = body.get("shards")
    if not isinstance(entries, list) or not entries:
        raise HelixError(400, "shards must be a non-empty list")
    for entry in entries:
        _validate_shard_entry(entry)
    conduit = _owned_conduit(state, token.client_id, body["conduit_id"])

    failing = faults.take_shard_errors({entry["id"] for entry in entries})
    updated: list[Shard] = []
    errors: list[dict[str, str]] = []
    for entry in entries:
        message = _apply_entry(state, conduit, entry, failing)
        if message is None:
            updated.append(conduit.shards[int(entry["id"])])
        else:
            errors.append({"id": entry["id"], "message": message, "code": "invalid_parameter"})
    logger.info("conduit %s: %d shards updated, %d failed", conduit.id, len(updated), len(errors))
    return json_response({"data": [shard.to_wire() for shard in updated], "errors": errors}, 202)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/eventsub/conduits", list_conduits)
    app.router.add_post("/eventsub/conduits", create_conduit)
    app.router.add_patch("/eventsub/conduits", update_conduit)
    app.router.add_delete("/eventsub/conduits", delete_conduit)
    app.router.add_get("/eventsub/conduits/shards", list_shards)
    app.router.add_patch("/eventsub/conduits/shards", update_shards)
