"""Create EventSub Subscription rules: transports, authorization, cost and limits."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .helix_base import HelixError
from .models import ENABLED, Subscription, Token, conflict_key
from .state import EmulatorState

logger = logging.getLogger(__name__)

SAME_CONDITION_MESSAGE = "too many subscriptions with the same type and condition"
# Seen in a Twitch developer forum report of a fourth WebSocket connection. The reference
# page names no message.
TRANSPORTS_LIMIT_MESSAGE = "number of websocket transports limit exceeded"
PER_CONNECTION_LIMIT_MESSAGE = "number of subscriptions per websocket transport limit exceeded"
SESSION_GONE_MESSAGE = "websocket transport session does not exist or has already disconnected"
AUTHORIZATION_KEYS = ("broadcaster_user_id", "moderator_user_id", "user_id")


@dataclasses.dataclass(frozen=True)
class SubscriptionSpec:
    """Condition keys of one type and version; ``user_authorized`` types cost 0.

    ``app_token_only`` types reject user access tokens, and so the WebSocket transport.
    """

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    user_authorized: bool = False
    app_token_only: bool = False


SPECS: dict[tuple[str, str], SubscriptionSpec] = {
    ("stream.online", "1"): SubscriptionSpec(("broadcaster_user_id",)),
    ("stream.offline", "1"): SubscriptionSpec(("broadcaster_user_id",)),
    ("channel.update", "2"): SubscriptionSpec(("broadcaster_user_id",)),
    ("channel.follow", "2"): SubscriptionSpec(("broadcaster_user_id", "moderator_user_id"), user_authorized=True),
    ("channel.chat.message", "1"): SubscriptionSpec(("broadcaster_user_id", "user_id"), user_authorized=True),
    ("channel.subscribe", "1"): SubscriptionSpec(("broadcaster_user_id",), user_authorized=True),
    ("conduit.shard.disabled", "1"): SubscriptionSpec(
        ("client_id",), ("conduit_id",), user_authorized=True, app_token_only=True,
    ),
}


@dataclasses.dataclass(frozen=True)
class CheckedRequest:
    """A Create EventSub Subscription body that passed the shape checks."""

    sub_type: str
    version: str
    spec: SubscriptionSpec
    condition: dict[str, str]
    transport: dict[str, Any]

    @property
    def session_id(self) -> str | None:
        return self.transport.get("session_id") if self.transport["method"] == "websocket" else None


def max_total_cost(state: EmulatorState, token: Token) -> int:
    """Return the cost budget: ``max_total_cost`` for app tokens, ``ws_max_total_cost`` for user tokens.

    Every Twitch example shows 10,000 for app tokens, and the WebSocket guide gives 10.
    """
    settings = state.settings
    return settings.max_total_cost if token.is_app else settings.ws_max_total_cost


def check_request(state: EmulatorState, body: dict[str, Any], token: Token) -> CheckedRequest:
    """Return the checked type, condition and transport, or raise a 400 HelixError."""
    spec = _spec_for(body)
    condition = _checked_condition(spec, body.get("condition"), token)
    transport = _checked_transport(state, body.get("transport"), token)
    return CheckedRequest(body["type"], body["version"], spec, condition, transport)


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
    if method == "conduit":
        return _conduit_transport(state, transport, token)
    if method == "websocket":
        return _websocket_transport(state, transport, token)
    # NOTE: the webhook transport is not modeled, since the emulator makes no outbound calls.
    raise HelixError(400, f"unsupported transport method {method!r}: the emulator accepts conduit and websocket")


def _conduit_transport(state: EmulatorState, transport: dict[str, Any], token: Token) -> dict[str, Any]:
    if not token.is_app:
        raise HelixError(400, "the conduit transport requires an app access token")
    conduit_id = transport.get("conduit_id")
    if not isinstance(conduit_id, str) or not conduit_id:
        raise HelixError(400, "missing transport conduit_id")
    conduit = state.conduits.get(conduit_id)
    if conduit is None or conduit.client_id != token.client_id:
        raise HelixError(400, f"conduit {conduit_id!r} not found")
    return {"method": "conduit", "conduit_id": conduit_id}


def _websocket_transport(state: EmulatorState, transport: dict[str, Any], token: Token) -> dict[str, Any]:
    # The WebSocket transport takes user access tokens only (Handling WebSocket events page).
    if token.is_app:
        raise HelixError(400, "the websocket transport requires a user access token, not an app access token")
    session_id = transport.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise HelixError(400, "missing transport session_id")
    session = state.sessions.get(session_id)
    if session is None or session.state == "closed":
        raise HelixError(400, SESSION_GONE_MESSAGE)
    return {"method": "websocket", "session_id": session_id, "connected_at": session.connected_at}


def check_authorization(state: EmulatorState, checked: CheckedRequest, token: Token) -> None:
    """Raise 403 for a user token on an app-token type, or when a user that the type needs withdrew authorization."""
    if checked.spec.app_token_only and not token.is_app:
        # NOTE: Twitch documents that the type needs an app access token, but not the
        # status of a user-token request. 403 is the emulator's choice.
        raise HelixError(403, f"subscription type {checked.sub_type} requires an app access token")
    if not checked.spec.user_authorized:
        return
    for key in AUTHORIZATION_KEYS:
        user_id = checked.condition.get(key)
        if user_id is not None and user_id in state.deauthorized_user_ids:
            raise HelixError(403, f"subscription missing proper authorization: user {user_id} has not authorized the app")


def cost_of(state: EmulatorState, checked: CheckedRequest, token: Token) -> int:
    # Cost is 0 for types that need the user's authorization and for a condition that names
    # a user who authorized the app (the token's own user, for user tokens), else 1
    # (Managing subscriptions page).
    if checked.spec.user_authorized:
        return 0
    named = {checked.condition.get(key) for key in AUTHORIZATION_KEYS} - {None}
    if named & state.authorized_user_ids:
        return 0
    if token.user_id is not None and token.user_id in named:
        return 0
    return 1


def check_limits(state: EmulatorState, checked: CheckedRequest, token: Token, cost: int) -> None:
    """Raise 409 for an identical subscription, else 429 or 400 for the limits it would pass."""
    key = conflict_key(token.client_id, token.user_id, checked.sub_type, checked.version, checked.condition,
                       checked.session_id)
    if state.find_conflict(key) is not None:
        raise HelixError(409, "subscription already exists")
    _check_same_condition(state, checked, token)
    if checked.session_id is not None:
        _check_websocket_limits(state, checked.session_id, token)
    _, total_cost = state.total_cost(token.client_id, token.user_id)
    if total_cost + cost > max_total_cost(state, token):
        raise HelixError(429, "cost limit exceeded")


def _check_same_condition(state: EmulatorState, checked: CheckedRequest, token: Token) -> None:
    # Twitch answers 429 with this message once the same type and condition exist too
    # often. The count is not documented, so max_same_type_condition sets it.
    same = state.same_condition_count(token.client_id, token.user_id, checked.sub_type, checked.condition)
    if same >= state.settings.max_same_type_condition:
        raise HelixError(429, SAME_CONDITION_MESSAGE)


def _check_websocket_limits(state: EmulatorState, session_id: str, token: Token) -> None:
    # At most 300 enabled subscriptions per connection and 3 connections with enabled
    # subscriptions per client and user (Handling WebSocket events page). The status code
    # is not documented, so ws_limit_status sets it (429 by default, as observed).
    settings = state.settings
    status = settings.ws_limit_status
    if len(state.session_subscriptions(session_id)) >= settings.ws_max_subscriptions_per_connection:
        raise HelixError(status, PER_CONNECTION_LIMIT_MESSAGE)
    sessions = {
        subscription.session_id
        for subscription in state.subscriptions.values()
        if subscription.status == ENABLED
        and subscription.session_id is not None
        and state.owned_by(subscription, token.client_id, token.user_id)
    }
    sessions.discard(session_id)
    if len(sessions) >= settings.ws_max_connections_per_user:
        raise HelixError(status, TRANSPORTS_LIMIT_MESSAGE)


def route_key(subscription_type: str, condition: dict[str, str], transport: dict[str, Any]) -> str:
    if subscription_type == "conduit.shard.disabled":
        return transport.get("conduit_id") or condition["client_id"]
    return condition["broadcaster_user_id"]


def describe(subscription: Subscription) -> str:
    return f"{subscription.type} v{subscription.version} {subscription.id}"
