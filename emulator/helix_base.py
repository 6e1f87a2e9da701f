"""Shared Helix plumbing: error bodies, authentication, rate limiting, faults, cursors."""

from __future__ import annotations

import base64
import binascii
import http
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .appkeys import FAULTS_KEY, STATE_KEY, TOKEN_KEY
from .faults import FaultStore
from .ratelimit import TokenBucket
from .state import EmulatorState, Token

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HelixError(Exception):
    """Raised by a Helix handler to answer with a Twitch-style error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    body = {"error": http.HTTPStatus(status).phrase, "status": status, "message": message}
    return json_response(body, status)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """Return the request body as a JSON object or raise a 400 HelixError."""
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise HelixError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HelixError(400, "the request body must be a JSON object")
    return body


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"p{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """Return the position stored in a cursor (0 for none) or raise a 400 HelixError."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("p"):
            raise ValueError(text)
        return int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HelixError(400, f"invalid pagination cursor {cursor!r}") from None


def request_token(request: web.Request) -> Token:
    return request[TOKEN_KEY]


def require_app_token(request: web.Request) -> Token:
    token = request_token(request)
    if not token.is_app:
        raise HelixError(401, "this endpoint requires an app access token")
    return token


def _authenticate(state: EmulatorState, request: web.Request, client_id: str) -> Token | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return None
    token = state.find_token(value.strip())
    if token is None or token.client_id != client_id:
        return None
    return token


@web.middleware
async def helix_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, charge the rate-limit bucket, apply faults and add the Ratelimit headers."""
    state = request.config_dict[STATE_KEY]
    faults = request.config_dict[FAULTS_KEY]
    path = request.path.removeprefix("/helix")
    state.counters.helix_calls[f"{request.method} {path}"] += 1
    client_id = request.headers.get("Client-Id", "")
    bucket = state.bucket(client_id) if client_id else None

    response = await _handle(state, faults, request, handler, client_id, path, bucket)
    if bucket is not None:
        response.headers.update(bucket.headers())
    return response


async def _handle(
    state: EmulatorState, faults: FaultStore, request: web.Request, handler: Handler,
    client_id: str, path: str, bucket: TokenBucket | None,
) -> web.StreamResponse:
    token = _authenticate(state, request, client_id) if client_id else None
    if token is None:
        return error_response(401, "Invalid OAuth token")
    if bucket is None or not bucket.try_take():
        return error_response(429, "rate limit exceeded")
    fault = faults.take_helix(request.method, path)
    if fault is not None:
        if fault.body is not None:
            return json_response(fault.body, fault.status)
        return error_response(fault.status, "injected fault")
    request[TOKEN_KEY] = token
    try:
        return await handler(request)
    except HelixError as exc:
        return error_response(exc.status, exc.message)
