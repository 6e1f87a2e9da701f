"""Shared Helix plumbing: error bodies, authentication, rate limiting, faults, cursors."""

from __future__ import annotations

import asyncio
import base64
import binascii
import http
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .appkeys import FAULTS_KEY, STATE_KEY, TOKEN_KEY
from .clock import rfc3339_now
from .faults import FaultStore, HelixFault
from .ratelimit import TokenBucket
from .state import EmulatorState, Token

OBSERVER_HEADER = "X-Emulator-Observer"

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HelixError(Exception):
    """Raised by a Helix handler to respond with a Twitch-style error body."""

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
    """Authenticate, charge the rate-limit bucket, apply faults and latency, add the Ratelimit headers, log the call."""
    state = request.config_dict[STATE_KEY]
    faults = request.config_dict[FAULTS_KEY]
    started = time.monotonic()
    path = request.path.removeprefix("/helix")
    state.counters.helix_calls[f"{request.method} {path}"] += 1
    if state.helix_latency_ms > 0:
        await asyncio.sleep(state.helix_latency_ms / 1000)
    client_id = request.headers.get("Client-Id", "")
    # A test harness that watches the fleet through Helix sends this header, so that its polling
    # neither spends the rate budget nor takes the injected faults of the fleet it watches.
    charge = request.headers.get(OBSERVER_HEADER) != "1"

    response, fault, bucket = await _handle(state, faults, request, handler, client_id, path, charge)
    if bucket is not None:
        response.headers.update(bucket.headers())
    if fault is not None and fault.ratelimit_remaining is not None:
        response.headers["Ratelimit-Remaining"] = str(fault.ratelimit_remaining)
    _log_call(state, request, path, response, fault, started)
    return response


async def _handle(
    state: EmulatorState, faults: FaultStore, request: web.Request, handler: Handler,
    client_id: str, path: str, charge: bool,
) -> tuple[web.StreamResponse, HelixFault | None, TokenBucket | None]:
    token = _authenticate(state, request, client_id) if client_id else None
    if token is None:
        return error_response(401, "Invalid OAuth token"), None, None
    request[TOKEN_KEY] = token
    bucket = state.bucket(client_id, token.user_id)
    if charge and not bucket.try_take():
        state.counters.rate_limited += 1
        return error_response(429, "rate limit exceeded"), None, bucket
    fault = faults.take_helix(request.method, path) if charge else None
    if fault is not None:
        if fault.body is not None:
            return json_response(fault.body, fault.status), fault, bucket
        return error_response(fault.status, fault.message or "injected fault"), fault, bucket
    try:
        return await handler(request), None, bucket
    except HelixError as exc:
        return error_response(exc.status, exc.message), None, bucket


def _log_call(
    state: EmulatorState, request: web.Request, path: str, response: web.StreamResponse,
    fault: HelixFault | None, started: float,
) -> None:
    token = request.get(TOKEN_KEY)
    entry: dict[str, Any] = {
        "at": rfc3339_now(3),
        "method": request.method,
        "path": path,
        "query": dict(request.query),
        "status": response.status,
        "client_id": request.headers.get("Client-Id"),
        "token": None if token is None else ("app" if token.is_app else f"user {token.user_id}"),
        "injected": fault is not None,
        "duration_ms": round((time.monotonic() - started) * 1000, 3),
    }
    if response.status >= 400 and isinstance(response, web.Response) and response.body:
        try:
            entry["message"] = orjson.loads(response.body).get("message")
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            entry["message"] = None
    state.helix_log.record(entry)
