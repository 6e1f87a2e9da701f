"""Bearer-token check for the HTTP API's state-changing requests.

GET and HEAD are open; every other method needs `Authorization: Bearer <CF_API_TOKEN>`. A missing
header is 401, a wrong token 403, and with CF_API_TOKEN empty every state-changing request is 403,
so a forgotten setting leaves the API read-only instead of open.
"""

from __future__ import annotations

import hmac

from aiohttp import web

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def check_bearer(header: str, api_token: str) -> web.Response | None:
    """Return an error response when `header` does not carry `api_token`, else None."""
    if not api_token:
        return _error(403, "state-changing requests are disabled: set CF_API_TOKEN on the coordinator to allow them")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return _error(401, "missing bearer token: send 'Authorization: Bearer <CF_API_TOKEN>'",
                      **{"WWW-Authenticate": 'Bearer realm="conduit-fleet"'})
    # compare_digest takes time independent of where the strings differ, so timing leaks nothing.
    if not hmac.compare_digest(presented.strip().encode(), api_token.encode()):
        return _error(403, "invalid bearer token")
    return None


def bearer_middleware(api_token: str):
    """Return an aiohttp middleware that applies `check_bearer` to state-changing requests."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.method not in READ_ONLY_METHODS:
            problem = check_bearer(request.headers.get("Authorization", ""), api_token)
            if problem is not None:
                return problem
        return await handler(request)

    return middleware
