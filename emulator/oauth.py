"""OAuth endpoints under ``/oauth2``: client-credentials tokens, validate and revoke."""

from __future__ import annotations

import logging

from aiohttp import web

from .helix_base import STATE_KEY, json_response
from .state import EmulatorState

logger = logging.getLogger(__name__)


def _oauth_error(status: int, message: str) -> web.Response:
    return json_response({"status": status, "message": message}, status)


async def issue_token(request: web.Request) -> web.Response:
    state: EmulatorState = request.config_dict[STATE_KEY]
    form = await request.post()
    settings = state.settings
    if form.get("client_id") != settings.client_id:
        return _oauth_error(400, "invalid client")
    if form.get("client_secret") != settings.client_secret:
        return _oauth_error(400, "invalid client secret")
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported grant_type: only client_credentials is supported")
    token = state.issue_token(settings.client_id)
    logger.info("app token issued for client %s", settings.client_id)
    return json_response(
        {"access_token": token.value, "expires_in": settings.token_expires_in_s, "token_type": "bearer"}
    )


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
    form = await request.post()
    if form.get("client_id") != state.settings.client_id:
        return _oauth_error(404, "client does not exist")
    token = state.tokens.get(str(form.get("token", "")))
    if token is None:
        return _oauth_error(400, "Invalid token")
    del state.tokens[token.value]
    logger.info("token revoked for client %s", token.client_id)
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/oauth2/token", issue_token)
    app.router.add_get("/oauth2/validate", validate_token)
    app.router.add_post("/oauth2/revoke", revoke_token)
