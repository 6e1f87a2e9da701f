"""Helix EventSub subscription endpoints under ``/helix/eventsub/subscriptions``."""

from __future__ import annotations

import logging

from aiohttp import web

from . import subscription_rules as rules
from .helix_base import (
    STATE_KEY, HelixError, decode_cursor, encode_cursor, json_response, read_json_object, request_token,
)
from .state import EmulatorState, Subscription

# Kept importable from here: the generator control validates type names against it.
SPECS = rules.SPECS

logger = logging.getLogger(__name__)

FILTERS = ("status", "type", "user_id", "subscription_id")


def _state(request: web.Request) -> EmulatorState:
    return request.config_dict[STATE_KEY]


async def create_subscription(request: web.Request) -> web.Response:
    token = request_token(request)
    state = _state(request)
    body = await read_json_object(request)
    checked = rules.check_request(state, body, token)
    rules.check_authorization(state, checked, token)
    cost = rules.cost_of(state, checked, token)
    rules.check_limits(state, checked, token, cost)

    subscription = state.add_subscription(
        token.client_id, checked.sub_type, checked.version, checked.condition, checked.transport, cost,
        rules.route_key(checked.sub_type, checked.condition, checked.transport), user_id=token.user_id,
    )
    if checked.session_id is not None:
        # A subscription counts as use of the session, like a shard bind (10 s rule).
        state.sessions[checked.session_id].ever_bound = True
    total, total_cost = state.total_cost(token.client_id, token.user_id)
    body_out = {
        "data": [subscription.to_wire()],
        "total": total,
        "total_cost": total_cost,
        "max_total_cost": rules.max_total_cost(state, token),
    }
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

    page: list[Subscription] = []
    more = False
    for subscription in state.subscriptions_after(after_seq):
        if not state.owned_by(subscription, token.client_id, token.user_id) or not _matches(subscription, name, value):
            continue
        if len(page) == state.settings.page_size:
            more = True
            break
        page.append(subscription)
    pagination: dict[str, str] = {}
    if more:
        pagination["cursor"] = encode_cursor(page[-1].seq)
    total, total_cost = state.total_cost(token.client_id, token.user_id)
    return json_response({
        "data": [s.to_wire() for s in page],
        "total": total,
        "total_cost": total_cost,
        "max_total_cost": rules.max_total_cost(state, token),
        "pagination": pagination,
    })


async def delete_subscription(request: web.Request) -> web.Response:
    token = request_token(request)
    state = _state(request)
    subscription_id = request.query.get("id")
    if not subscription_id:
        raise HelixError(400, "missing query parameter id")
    subscription = state.subscriptions.get(subscription_id)
    if subscription is None or not state.owned_by(subscription, token.client_id, token.user_id):
        raise HelixError(404, f"subscription {subscription_id!r} not found")
    state.delete_subscription(subscription)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/eventsub/subscriptions", create_subscription)
    app.router.add_get("/eventsub/subscriptions", list_subscriptions)
    app.router.add_delete("/eventsub/subscriptions", delete_subscription)
