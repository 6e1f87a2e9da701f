"""OAuth endpoints under ``/oauth2``: client-credentials and refresh grants, validate and revoke."""

from __future__ import annotations

import logging

from aiohttp import web

from .helix_base import STATE_KEY, json_response
from .state import EmulatorState

logger = logging.getLogger(__name__)


def _oauth_error(status: int, message: str) -> web.Response:
    return json_response({"status": status, "message": message}, status)


async def _fields(request: web.Request) -> dict[str, str]:
    """Return the form fields, with query parameters as a fallback.

    Twitch documents a form body, but its older examples and some clients (TwitchIO 3)
    put the fields in the query string, and Twitch accepts both.
    """
    form = await request.post()
    fields = {key: value for key, value in request.query.items()}
    fields.update({key: str(value) for key, value in form.items()})
    return fields


async def issue_token(request: web.Request) -> web.Response:
    state: EmulatorState = request.config_dict[STATE_KEY]
    form = await _fields(request)
    settings = state.settings
    if form.get("client_id") != settings.client_id:
        return _oauth_error(400, "invalid client")
    if form.get("client_secret") != settings.client_secret:
        return _oauth_error(400, "invalid client secret")
    grant_type = form.get("grant_type")
    if grant_type == "refresh_token":
        return _refresh(state, str(form.get("refresh_token", "")))
    if grant_type != "client_credentials":
        return _oauth_error(400, "unsupported grant_type: expected client_credentials or refresh_token")
    token = state.issue_token(settings.client_id)
    logger.info("app token issued for client %s", settings.client_id)
    return json_response(
        {"access_token": token.value, "expires_in": settings.token_expires_in_s, "token_type": "bearer"}
    )


def _refresh(state: EmulatorState, refresh_token: str) -> web.Response:
    # Only user tokens have refresh tokens; an app token is replaced by a new
    # client-credentials grant (Authentication guide, refreshing access tokens).
    token = state.token_store.refresh(state.settings.client_id, refresh_token)
    if token is None:
        return _oauth_error(400, "Invalid refresh token")
    return json_response({
        "access_token": token.value,
        "refresh_token": token.refresh_token,
        "expires_in": state.settings.token_expires_in_s,
        "scope": list(token.scopes),
        "token_type": "bearer",
    })


async def validate_token(request: web.Request) -> web.Response:
    state: EmulatorState = request.config_dict[STATE_KEY]
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    token = state.find_token(value.strip()) if scheme.lower() in ("oauth", "bearer") else None
    if token is None:
        return _oauth_error(401, "invalid access token")
    body = {
        "client_id": token.client_id,
        "login": None if token.is_app else f"user{token.user_id}",
        "scopes": list(token.scopes),
        "user_id": token.user_id,
        "expires_in": state.remaining_twitch_s(token),
    }
    return json_response(body)


async def revoke_token(request: web.Request) -> web.Response:
    state: EmulatorState = request.config_dict[STATE_KEY]
    form = await _fields(request)
    if form.get("client_id") != state.settings.client_id:
        return _oauth_error(404, "client does not exist")
    token = state.token_store.revoke(str(form.get("token", "")))
    if token is None:
        return _oauth_error(400, "Invalid token")
    logger.info("token revoked for client %s", token.client_id)
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/oauth2/token", issue_token)
    app.router.add_get("/oauth2/validate", validate_token)
    app.router.add_post("/oauth2/revoke", revoke_token)
