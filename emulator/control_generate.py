"""Control API for the load generator: ``/_emulator/generate``."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .appkeys import GENERATORS_KEY, STATE_KEY
from .control_input import optional_int, optional_number, string_list
from .generator import GeneratorConfig, GeneratorRegistry, GeneratorRun
from .helix_base import HelixError, json_response, read_json_object
from .helix_subscriptions import SPECS

KNOWN_TYPES = frozenset(sub_type for sub_type, _ in SPECS)


def _config(body: dict[str, Any]) -> GeneratorConfig:
    rate = body.get("rate")
    if rate is None:
        raise HelixError(400, "missing rate: expected events per second > 0")
    count = optional_int(body, "count", 1)
    duration_s = optional_number(body, "duration_s", None, 0.0, low_inclusive=False)
    if count is None and duration_s is None:
        raise HelixError(400, "give count or duration_s (or both)")
    types = string_list(body, "types")
    unknown = sorted(set(types or ()) - KNOWN_TYPES)
    if unknown:
        raise HelixError(400, f"unknown types {unknown}: expected some of {sorted(KNOWN_TYPES)}")
    return GeneratorConfig(
        rate=optional_number(body, "rate", None, 0.0, low_inclusive=False) or 0.0,
        count=count,
        duration_s=duration_s,
        types=frozenset(types) if types else None,
        duplicate_ratio=optional_number(body, "duplicate_ratio", 0.0, 0.0, 1.0) or 0.0,
        duplicate_other_shard_ratio=optional_number(body, "duplicate_other_shard_ratio", 0.5, 0.0, 1.0) or 0.0,
        chat_text_bytes=optional_int(body, "chat_text_bytes", 0),
        seed=_seed(body),
        type_weights=_weights(body, "type_weights", KNOWN_TYPES),
        channel_weights=_weights(body, "channel_weights", None),
    )


def _seed(body: dict[str, Any]) -> int | None:
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise HelixError(400, f"invalid seed {seed!r}: expected an integer")
    return seed


def _weights(body: dict[str, Any], name: str, known: frozenset[str] | None) -> dict[str, float] | None:
    """Return a name-to-weight table; each weight is a number >= 0 and one at least is > 0."""
    table = body.get(name)
    if table is None:
        return None
    if not isinstance(table, dict) or not table:
        raise HelixError(400, f"invalid {name} {table!r}: expected an object of name to weight")
    for key, weight in table.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise HelixError(400, f"invalid {name} weight {weight!r} for {key!r}: expected a number >= 0")
        if known is not None and key not in known:
            raise HelixError(400, f"unknown type {key!r} in {name}: expected some of {sorted(known)}")
    if not any(weight > 0 for weight in table.values()):
        raise HelixError(400, f"invalid {name}: at least one weight must be > 0")
    return {key: float(weight) for key, weight in table.items()}


def _find_run(request: web.Request) -> GeneratorRun:
    registry: GeneratorRegistry = request.config_dict[GENERATORS_KEY]
    run = registry.runs.get(request.match_info["run_id"])
    if run is None:
        raise HelixError(404, f"generator {request.match_info['run_id']!r} not found")
    return run


async def start_generator(request: web.Request) -> web.Response:
    state = request.config_dict[STATE_KEY]
    registry: GeneratorRegistry = request.config_dict[GENERATORS_KEY]
    config = _config(await read_json_object(request))
    if not state.enabled_subscriptions(config.types):
        raise HelixError(409, "no enabled conduit or websocket subscriptions to generate events for")
    run = registry.start(config)
    if request.query.get("wait") in ("1", "true"):
        if run.task is not None:
            # shield: a client that gives up waiting must not stop the run.
            await asyncio.shield(run.task)
        return json_response(run.to_wire(), 200)
    return json_response({"id": run.id}, 202)


async def get_generator(request: web.Request) -> web.Response:
    return json_response(_find_run(request).to_wire())


async def stop_generator(request: web.Request) -> web.Response:
    run = _find_run(request)
    await request.config_dict[GENERATORS_KEY].stop(run)
    return json_response(run.to_wire())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/generate", start_generator)
    app.router.add_get("/generate/{run_id}", get_generator)
    app.router.add_delete("/generate/{run_id}", stop_generator)
