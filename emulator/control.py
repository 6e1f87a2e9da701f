"""Control API under ``/_emulator/``: sessions, faults, revocations, tokens, counters, state."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from . import control_generate, control_inject, control_observe
from .subscription_rules import SAME_CONDITION_MESSAGE
from .appkeys import FAULTS_KEY, MANAGER_KEY, ROUTER_KEY, STATE_KEY
from .control_input import optional_int, selection, string_list
from .faults import HelixFault, ShardErrorFault
from .helix_base import HelixError, error_response, json_response, read_json_object
from .models import ENABLED

logger = logging.getLogger(__name__)

DROP_MODES = ("abrupt", "close", "silent")
REVOCATION_STATUSES = ("authorization_revoked", "user_removed", "version_removed", "moderator_removed")


@web.middleware
async def control_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except HelixError as exc:
        return error_response(exc.status, exc.message)


async def mint_user_token(request: web.Request) -> web.Response:
    state = request.config_dict[STATE_KEY]
    body = await read_json_object(request)
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise HelixError(400, "missing user_id: expected a non-empty string")
    scopes = string_list(body, "scopes") or []
    token = state.issue_token(state.settings.client_id, user_id, tuple(scopes))
    logger.info("user token issued for user %s", user_id)
    return json_response({
        "access_token": token.value,
        "refresh_token": token.refresh_token,
        "expires_in": state.settings.token_expires_in_s,
        "scope": list(token.scopes),
        "token_type": "bearer",
    })


async def get_counters(request: web.Request) -> web.Response:
    state = request.config_dict[STATE_KEY]
    return json_response(state.counters.to_wire(len(state.sessions)))


async def reset_counters(request: web.Request) -> web.Response:
    request.config_dict[STATE_KEY].counters.reset()
    logger.info("counters reset")
    return json_response({"reset": True})


async def list_sessions(request: web.Request) -> web.Response:
    state = request.config_dict[STATE_KEY]
    sessions = [
        session.to_wire(state.shard_ids_of_session(session.id), len(state.session_subscriptions(session.id)))
        for session in state.sessions.values()
    ]
    return json_response(sessions)


def _drop_mode(body: dict[str, Any]) -> tuple[str, int]:
    mode = body.get("mode", "abrupt")
    if mode not in DROP_MODES:
        raise HelixError(400, f"invalid mode {mode!r}: expected one of {', '.join(DROP_MODES)}")
    code = body.get("code", 4000)
    valid_code = isinstance(code, int) and not isinstance(code, bool) and (code == 1000 or 3000 <= code <= 4999)
    if mode == "close" and not valid_code:
        raise HelixError(400, f"invalid code {code!r}: expected 1000 or 3000..4999")
    return mode, code


async def drop_sessions(request: web.Request) -> web.Response:
    state = request.config_dict[STATE_KEY]
    manager = request.config_dict[MANAGER_KEY]
    body = await read_json_object(request)
    session_ids, shard_ids, everything = selection(body)
    mode, code = _drop_mode(body)
    sessions = manager.select(session_ids, shard_ids, everything)
    for session in sessions:
        connection = session.current
        if mode == "abrupt":
            connection.abort()
        elif mode == "close":
            await connection.close(code, "closed by the emulator control API", state.counters)
        else:
            connection.silent = True
    logger.info("dropped %d sessions (mode %s)", len(sessions), mode)
    return json_response({"session_ids": [session.id for session in sessions], "mode": mode})


async def reconnect_sessions(request: web.Request) -> web.Response:
    manager = request.config_dict[MANAGER_KEY]
    body = await read_json_object(request)
    session_ids, shard_ids, everything = selection(body)
    affected = []
    for session in manager.select(session_ids, shard_ids, everything):
        if await manager.start_reconnect(session):
            affected.append(session.id)
    return json_response({"session_ids": affected})


def _helix_fault(body: dict[str, Any]) -> HelixFault:
    """Build a ``helix`` fault: any status and body for the next ``count`` calls of one endpoint."""
    method, path, status = body.get("method"), body.get("path"), body.get("status")
    if not isinstance(method, str) or not method:
        raise HelixError(400, "missing method, e.g. \"PATCH\"")
    if not isinstance(path, str) or not (path.startswith("/") or path == "*"):
        raise HelixError(400, "missing path: expected the Helix path without /helix, e.g. \"/eventsub/conduits/shards\", "
                              "or \"*\" for every path")
    fault_body = body.get("body")
    if fault_body is not None and not isinstance(fault_body, dict):
        raise HelixError(400, "body must be a JSON object")
    # A canned 200 lets a test serve a page Twitch could send but the emulator never makes,
    # for example a subscription with a status no client knows yet.
    canned_success = status == 200 and fault_body is not None
    if isinstance(status, bool) or not isinstance(status, int) or not (400 <= status <= 599 or canned_success):
        raise HelixError(400, f"invalid status {status!r}: expected an integer 400..599, or 200 with a body")
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise HelixError(400, "message must be a string")
    count = optional_int(body, "count", 1) or 1
    remaining = optional_int(body, "ratelimit_remaining", 0)
    return HelixFault(method.upper(), path.removeprefix("/helix"), status, count, fault_body, message, remaining)


def _rate_limit_fault(body: dict[str, Any]) -> HelixFault:
    """Build a real-looking rate limit: 429 with ``Ratelimit-Remaining: 0``."""
    fault = _helix_fault({"method": "POST", "path": "/eventsub/subscriptions", **body, "status": 429})
    fault.message = fault.message or "Too Many Requests"
    fault.ratelimit_remaining = 0
    return fault


def _subscription_limit_fault(body: dict[str, Any]) -> HelixFault:
    """Build a limit error: 429 naming the same-type-and-condition limit, with the bucket not empty."""
    fault = _helix_fault({"method": "POST", "path": "/eventsub/subscriptions", **body, "status": 429})
    fault.message = fault.message or SAME_CONDITION_MESSAGE
    return fault


async def add_fault(request: web.Request) -> web.Response:
    faults = request.config_dict[FAULTS_KEY]
    body = await read_json_object(request)
    kind = body.get("kind", "helix")
    if kind == "shard_error":
        shard_ids = string_list(body, "shard_ids", required=True) or []
        faults.add_shard_error(ShardErrorFault(frozenset(shard_ids), optional_int(body, "count", 1) or 1))
    elif kind == "helix":
        faults.add_helix(_helix_fault(body))
    elif kind == "rate_limit":
        faults.add_helix(_rate_limit_fault(body))
    elif kind == "subscription_limit":
        faults.add_helix(_subscription_limit_fault(body))
    else:
        raise HelixError(400, f"invalid kind {kind!r}: expected helix, rate_limit, subscription_limit or shard_error")
    return json_response(faults.to_wire(), 201)


async def list_faults(request: web.Request) -> web.Response:
    return json_response(request.config_dict[FAULTS_KEY].to_wire())


async def clear_faults(request: web.Request) -> web.Response:
    request.config_dict[FAULTS_KEY].clear()
    return web.Response(status=204)


async def revoke_subscriptions(request: web.Request) -> web.Response:
    state = request.config_dict[STATE_KEY]
    router = request.config_dict[ROUTER_KEY]
    body = await read_json_object(request)
    subscription_ids = string_list(body, "subscription_ids", required=True) or []
    status = body.get("status", "authorization_revoked")
    if status not in REVOCATION_STATUSES:
        raise HelixError(400, f"invalid status {status!r}: expected one of {', '.join(REVOCATION_STATUSES)}")
    revoked, sent, not_found, not_enabled = [], [], [], []
    for subscription_id in subscription_ids:
        subscription = state.subscriptions.get(subscription_id)
        if subscription is None:
            not_found.append(subscription_id)
            continue
        # Twitch sends a revocation once; a subscription already out of `enabled` keeps its status.
        if subscription.status != ENABLED:
            not_enabled.append(subscription_id)
            continue
        state.set_subscription_status(subscription, status)
        revoked.append(subscription_id)
        if await router.revoke(subscription):
            sent.append(subscription_id)
    logger.info("revoked %d subscriptions with status %s", len(revoked), status)
    return json_response({"revoked": revoked, "frames_sent": sent, "not_found": not_found, "not_enabled": not_enabled})


async def authorize_users(request: web.Request) -> web.Response:
    state = request.config_dict[STATE_KEY]
    body = await read_json_object(request)
    user_ids = string_list(body, "user_ids", required=True) or []
    state.authorized_user_ids.update(user_ids)
    state.deauthorized_user_ids.difference_update(user_ids)
    logger.info("%d users marked as having authorized the app", len(user_ids))
    return json_response({"authorized_user_ids": sorted(state.authorized_user_ids)})


async def invalidate_tokens(request: web.Request) -> web.Response:
    count = request.config_dict[STATE_KEY].invalidate_app_tokens()
    return json_response({"invalidated": count})


async def get_sent_frame(request: web.Request) -> web.Response:
    message_id = request.match_info["message_id"]
    data = request.config_dict[STATE_KEY].sent_log.get(message_id)
    if data is None:
        raise HelixError(404, f"no sent notification with message_id {message_id!r} (only the newest 50,000 are kept)")
    return json_response({"message_id": message_id, "frame": data.decode()})


async def lookup_deliveries(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    log = request.config_dict[STATE_KEY].delivery_log
    if "since" in body:
        since = body["since"]
        if not isinstance(since, int) or since < 0:
            raise HelixError(400, "since must be a sequence number of 0 or more")
        return json_response({"sequence": log.sequence, "deliveries": log.since(since)})
    message_ids = body.get("message_ids")
    if not isinstance(message_ids, list) or not all(isinstance(m, str) for m in message_ids):
        raise HelixError(400, "expected {\"since\": N} or {\"message_ids\": [...]}")
    return json_response({"sequence": log.sequence, "deliveries": log.lookup(message_ids)})


async def dump_state(request: web.Request) -> web.Response:
    return json_response(request.config_dict[STATE_KEY].dump())


def create_control_app() -> web.Application:
    app = web.Application(middlewares=[control_errors])
    app.router.add_post("/user-tokens", mint_user_token)
    app.router.add_get("/counters", get_counters)
    app.router.add_post("/counters/reset", reset_counters)
    app.router.add_get("/sessions", list_sessions)
    app.router.add_post("/sessions/drop", drop_sessions)
    app.router.add_post("/sessions/reconnect", reconnect_sessions)
    app.router.add_post("/faults", add_fault)
    app.router.add_get("/faults", list_faults)
    app.router.add_delete("/faults", clear_faults)
    app.router.add_post("/revoke", revoke_subscriptions)
    app.router.add_post("/authorize", authorize_users)
    app.router.add_post("/tokens/invalidate", invalidate_tokens)
    app.router.add_get("/state", dump_state)
    app.router.add_get("/sent/{message_id}", get_sent_frame)
    app.router.add_post("/deliveries", lookup_deliveries)
    control_generate.add_routes(app)
    control_inject.add_routes(app)
    control_observe.add_routes(app)
    return app
