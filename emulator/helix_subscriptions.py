"""Helix EventSub subscription endpoints under ``/helix/eventsub/subscriptions``."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from aiohttp import web

from .helix_base import (
    STATE_KEY, HelixError, decode_cursor, encode_cursor, json_response, read_json_object, request_token,
)
from .state import EmulatorState, Subscription, Token

logger = logging.getLogger(__name__)

# Budget for app-token subscriptions; every Twitch example shows 10,000.
MAX_TOTAL_COST = 10_000
FILTERS = ("status", "type", "user_id", "subscription_id")


@dataclasses.dataclass(frozen=True)
class SubscriptionSpec:
    """Condition keys of one type and version; ``user_authorized`` types cost 0."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    user_authorized: bool = False


SPECS: dict[tuple[str, str], SubscriptionSpec] = {
    ("stream.online", "1"): SubscriptionSpec(("broadcaster_user_id",)),
    ("stream.offline", "1"): SubscriptionSpec(("broadcaster_user_id",)),
    ("channel.update", "2"): SubscriptionSpec(("broadcaster_user_id",)),
    ("channel.follow", "2"): SubscriptionSpec(("broadcaster_user_id", "moderator_user_id"), user_authorized=True),
    ("channel.chat.message", "1"): SubscriptionSpec(("broadcaster_user_id", "user_id"), user_authorized=True),
    ("channel.subscribe", "1"): SubscriptionSpec(("broadcaster_user_id",), user_authorized=True),
    ("conduit.shard.disabled", "1"): SubscriptionSpec(("client_id",), ("conduit_id",), user_authorized=True),
}


def _state(request: web.Request) -> EmulatorState:
    return request.config_dict[STATE_KEY]


def _spec_for(body: dict[str, Any]) -> SubscriptionSpec:
    sub_type, version = body.get("type"), body.get("version")
    if not isinstance(sub_type, str) or not isinstance(version, str):
        raise HelixError(400, "type and version must be strings")
    spec = SPECS.get((sub_type, version))
    if spec is None:
        raise HelixError(400, f"unsupported subscription type {sub_type!r} version {version!r}")
    return spec


def _checked_condition(spec: SubscriptionSpec, condition: Any, token: Token) -> dict[str, str]:
    if not isinstance(condition, dict):
        raise HelixError(400, "condition must be a JSON object")
    for key in spec.required:
        if key not in condition:
            raise HelixError(400, f"missing condition key {key}")
    for key, value in condition.items():
        if key not in spec.required and key not in spec.optional:
            raise HelixError(400, f"unknown condition key {key}")
        if not isinstance(value, str) or not value:
            raise HelixError(400, f"condition {key} must be a non-empty string")
    if "client_id" in condition and condition["client_id"] != token.client_id:
        raise HelixError(400, "condition client_id must match the Client-Id header")
    return dict(condition)


def _checked_transport(state: EmulatorState, transport: Any, token: Token) -> dict[str, Any]:
    if not isinstance(transport, dict):
        raise HelixError(400, "transport must be a JSON object")
    method = transport.get("method")
    if method != "conduit":
        # NOTE: the plain websocket and webhook transports are not modeled.
        raise HelixError(400, f"unsupported transport method {method!r}: the emulator accepts only conduit")
    if not token.is_app:
        raise HelixError(400, "the conduit transport requires an app access token")
    conduit_id = transport.get("conduit_id")
    if not isinstance(conduit_id, str) or not conduit_id:
        raise HelixError(400, "missing transport conduit_id")
    conduit = state.conduits.get(conduit_id)
    if conduit is None or conduit.client_id != token.client_id:
        raise HelixError(400, f"conduit {conduit_id!r} not found")
    return {"method": "conduit", "conduit_id": conduit_id}


def _cost(state: EmulatorState, spec: SubscriptionSpec, condition: dict[str, str]) -> int:
    # Cost is 0 for types that need the user's authorization and for a broadcaster who
    # authorized the app, else 1 (Managing subscriptions page).
    if spec.user_authorized or condition.get("broadcaster_user_id") in state.authorized_user_ids:
        return 0
    return 1


def _route_key(sub_type: str, condition: dict[str, str], transport: dict[str, Any]) -> str:
    if sub_type == "conduit.shard.disabled":
        return transport["conduit_id"]
    return condition["broadcaster_user_id"]


async def create_subscription(request: web.Request) -> web.Response:
    token = request_token(request)
    state = _state(request)
    body = await read_json_object(request)
    spec = _spec_for(body)
    condition = _checked_condition(spec, body.get("condition"), token)
    transport = _checked_transport(state, body.get("transport"), token)
    sub_type, version = body["type"], body["version"]

    if state.find_conflict(token.client_id, sub_type, version, condition) is not None:
        raise HelixError(409, "subscription already exists")
    cost = _cost(state, spec, condition)
    _, total_cost = state.total_cost(token.client_id)
    if total_cost + cost > MAX_TOTAL_COST:
        raise HelixError(429, "cost limit exceeded")
    subscription = state.add_subscription(
        token.client_id, sub_type, version, condition, transport, cost, _route_key(sub_type, condition, transport)
    )
    total, total_cost = state.total_cost(token.client_id)
    body_out = {"data": [subscription.to_wire()], "total": total, "total_cost": total_cost, "max_total_cost": MAX_TOTAL_COST}
    return json_response(body_out, 202)


def _matches(subscription: Subscription, name: str | None, value: str | None) -> bool:
    if name is None:
        return True
    if name == "status":
        return subscription.status == value
    if name == "type":
        return subscription.type == value
    if name == "subscription_id":
        return subscription.id == value
    return value in subscription.condition.values()


async def list_subscriptions(request: web.Request) -> web.Response:
    token = request_token(request)
    state = _state(request)
    given = [name for name in FILTERS if name in request.query]
    if len(given) > 1:
        raise HelixError(400, f"filters {', '.join(given)} are mutually exclusive: use at most one")
    name = given[0] if given else None
    value = request.query.get(name) if name else None
    after_seq = decode_cursor(request.query.get("after"))

    owned = [s for s in state.subscriptions.values() if s.client_id == token.client_id]
    matching = [s for s in owned if s.seq > after_seq and _matches(s, name, value)]
    page = matching[: state.settings.page_size]
    pagination: dict[str, str] = {}
    if len(matching) > len(page):
        pagination["cursor"] = encode_cursor(page[-1].seq)
    total, total_cost = state.total_cost(token.client_id)
    return json_response({
        "data": [s.to_wire() for s in page],
        "total": total,
        "total_cost": total_cost,
        "max_total_cost": MAX_TOTAL_COST,
        "pagination": pagination,
    })


async def delete_subscription(request: web.Request) -> web.Response:
    token = request_token(request)
    state = _state(request)
    subscription_id = request.query.get("id")
    if not subscription_id:
        raise HelixError(400, "missing query parameter id")
    subscription = state.subscriptions.get(subscription_id)
    if subscription is None or subscription.client_id != token.client_id:
        raise HelixError(404, f"subscription {subscription_id!r} not found")
    state.delete_subscription(subscription)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/eventsub/subscriptions", create_subscription)
    app.router.add_get("/eventsub/subscriptions", list_subscriptions)
    app.router.add_delete("/eventsub/subscriptions", delete_subscription)
