"""Control API for observation: the Helix call log, one session's detail and an HTML overview."""

from __future__ import annotations

import html
import logging

from aiohttp import web

from .appkeys import STATE_KEY
from .helix_base import HelixError, json_response
from .state import EmulatorState

logger = logging.getLogger(__name__)

DEFAULT_LOG_LIMIT = 100

_PAGE_STYLE = "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:1em}" \
    "td,th{border:1px solid #999;padding:2px 6px;text-align:left}"


def _state(request: web.Request) -> EmulatorState:
    return request.config_dict[STATE_KEY]


async def get_helix_log(request: web.Request) -> web.Response:
    raw = request.query.get("limit", str(DEFAULT_LOG_LIMIT))
    if not raw.isdigit():
        raise HelixError(400, f"invalid limit {raw!r}: expected an integer >= 0")
    return json_response(_state(request).helix_log.newest(int(raw)))


async def get_session(request: web.Request) -> web.Response:
    state = _state(request)
    session_id = request.match_info["session_id"]
    session = state.sessions.get(session_id)
    if session is None:
        raise HelixError(404, f"no open session {session_id!r}")
    body = session.to_wire(state.shard_ids_of_session(session.id), len(state.session_subscriptions(session.id)))
    body["subscription_ids"] = [subscription.id for subscription in state.session_subscriptions(session.id)]
    return json_response(body)


def _table(headers: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_overview(state: EmulatorState) -> str:
    """Return a plain HTML page listing conduits, shards and sessions, with no external assets."""
    conduit_rows = [(c.id, len(c.shards), sum(s.status == "enabled" for s in c.shards)) for c in state.conduits.values()]
    shard_rows = [
        (shard.conduit_id, shard.id, shard.status, shard.method, shard.session_id or shard.callback or "")
        for conduit in state.conduits.values()
        for shard in conduit.shards
    ]
    session_rows = [
        (session.id, "silent" if session.current.silent else session.state, session.connected_at,
         ", ".join(state.shard_ids_of_session(session.id)), len(state.session_subscriptions(session.id)),
         session.counters["notifications"])
        for session in state.sessions.values()
    ]
    parts = [
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Twitch emulator</title>",
        f"<style>{_PAGE_STYLE}</style></head><body><h1>Twitch emulator</h1>",
        f"<h2>Conduits ({len(conduit_rows)})</h2>", _table(("id", "shards", "enabled"), conduit_rows),
        f"<h2>Shards ({len(shard_rows)})</h2>", _table(("conduit", "shard", "status", "method", "session or callback"), shard_rows),
        f"<h2>Sessions ({len(session_rows)})</h2>",
        _table(("id", "state", "connected_at", "shards", "websocket subscriptions", "notifications"), session_rows),
        "</body></html>",
    ]
    return "".join(parts)


async def overview_page(request: web.Request) -> web.Response:
    return web.Response(text=render_overview(_state(request)), content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview_page)
    app.router.add_get("/helix-log", get_helix_log)
    app.router.add_get("/sessions/{session_id}", get_session)
