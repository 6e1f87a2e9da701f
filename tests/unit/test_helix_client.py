"""HelixClient with a real AppTokenManager against the in-process emulator and the real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as redis

from common.errors import ConduitNotFound, LimitReached, RateLimited, ServerError, TokenError
from common.helix import HelixClient
from common.models import ShardTransport, ShardUpdate
from common.token import AppTokenManager

from .conftest import EmulatorStarter, RunningEmulator


class Harness:
    """A HelixClient, its token manager and the emulator they call."""

    def __init__(self, emulator: RunningEmulator, client: HelixClient, tokens: AppTokenManager,
                 http: aiohttp.ClientSession) -> None:
        self.emulator = emulator
        self.client = client
        self.tokens = tokens
        self.http = http

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.emulator.base_url}/_emulator{path}"
        async with self.http.request(method, url, json=body) as response:
            raw = await response.read()
            assert response.status < 300, raw
            return orjson.loads(raw) if raw else None

    async def open_session(self) -> tuple[aiohttp.ClientWebSocketResponse, str]:
        ws = await self.http.ws_connect(self.emulator.base_url.replace("http://", "ws://") + "/ws")
        welcome = orjson.loads((await ws.receive(timeout=2.0)).data)
        return ws, welcome["payload"]["session"]["id"]


@pytest.fixture
async def make_harness(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                       http: aiohttp.ClientSession) -> AsyncIterator:
    async def make(*, fleet: dict[str, Any] | None = None, client: dict[str, Any] | None = None,
                   **emulator_settings: Any) -> Harness:
        """Start an emulator with `emulator_settings`. `fleet` overrides Settings fields and `client` HelixClient arguments."""
        emulator = await start_emulator(**emulator_settings)
        settings = emulator.fleet_settings(**(fleet or {}))
        tokens = AppTokenManager(settings, redis_client, http)
        helix = HelixClient(settings, tokens, http, **(client or {}))
        return Harness(emulator, helix, tokens, http)

    yield make


def websocket_update(shard_id: str, session_id: str) -> ShardUpdate:
    return ShardUpdate(id=shard_id, transport=ShardTransport(method="websocket", session_id=session_id))


async def test_get_shards_follows_pagination(make_harness) -> None:
    harness = await make_harness(page_size=3)
    conduit = await harness.client.create_conduit(8)

    shards = await harness.client.get_shards(conduit.id)

    assert [shard.id for shard in shards] == [str(i) for i in range(8)]
    counters = await harness.control("GET", "/counters")
    assert counters["helix_calls"]["GET /eventsub/conduits/shards"] == 3


async def test_get_shards_single_page(make_harness) -> None:
    harness = await make_harness(page_size=3)
    conduit = await harness.client.create_conduit(3)

    shards = await harness.client.get_shards(conduit.id)

    assert [shard.status for shard in shards] == ["websocket_disconnected"] * 3


async def test_update_shards_partial_errors(make_harness) -> None:
    harness = await make_harness(bind_deadline_s=100)
    conduit = await harness.client.create_conduit(2)
    ws, session_id = await harness.open_session()

    result = await harness.client.update_shards(
        conduit.id, [websocket_update("0", session_id), websocket_update("1", "no-such-session")])
    await ws.close()

    assert [shard.id for shard in result.data] == ["0"]
    assert result.data[0].status == "enabled"
    assert [error.id for error in result.errors] == ["1"]
    assert result.errors[0].message


async def test_create_subscription_conflict_none(make_harness) -> None:
    harness = await make_harness()
    conduit = await harness.client.create_conduit(1)
    condition = {"broadcaster_user_id": "1001"}

    created = await harness.client.create_subscription("stream.online", "1", condition, conduit.id)
    repeated = await harness.client.create_subscription("stream.online", "1", condition, conduit.id)

    assert created is not None
    assert created.type == "stream.online"
    assert repeated is None


async def test_create_subscription_records_cost(make_harness) -> None:
    harness = await make_harness()
    conduit = await harness.client.create_conduit(1)

    await harness.client.create_subscription("stream.online", "1", {"broadcaster_user_id": "1001"}, conduit.id)

    assert harness.client.last_total_cost == 1
    assert harness.client.max_total_cost == 10_000


async def test_delete_subscription_missing_false(make_harness) -> None:
    harness = await make_harness()
    conduit = await harness.client.create_conduit(1)
    created = await harness.client.create_subscription("stream.online", "1", {"broadcaster_user_id": "7"}, conduit.id)

    first = await harness.client.delete_subscription(created.id)
    second = await harness.client.delete_subscription(created.id)

    assert first is True
    assert second is False


async def test_server_error_retried(make_harness) -> None:
    # The retries take up to 0.6 s, so the unbound session's bind deadline is set to 5 s.
    harness = await make_harness(bind_deadline_s=100)
    conduit = await harness.client.create_conduit(1)
    ws, session_id = await harness.open_session()
    await harness.control("POST", "/faults", {"method": "PATCH", "path": "/eventsub/conduits/shards",
                                              "status": 500, "count": 2})

    result = await harness.client.update_shards(conduit.id, [websocket_update("0", session_id)])
    await ws.close()

    assert [shard.id for shard in result.data] == ["0"]
    counters = await harness.control("GET", "/counters")
    assert counters["helix_calls"]["PATCH /eventsub/conduits/shards"] == 3
    assert harness.client.consecutive_failures == 0


async def test_server_error_exhausts_retries(make_harness) -> None:
    harness = await make_harness(client={"max_retries": 1})
    conduit = await harness.client.create_conduit(1)
    await harness.control("POST", "/faults", {"method": "PATCH", "path": "/eventsub/conduits/shards",
                                              "status": 503, "count": 2})

    with pytest.raises(ServerError) as caught:
        await harness.client.update_shards(conduit.id, [websocket_update("0", "s")])

    assert caught.value.status == 503
    assert harness.client.consecutive_failures == 1
    counters = await harness.control("GET", "/counters")
    assert counters["helix_calls"]["PATCH /eventsub/conduits/shards"] == 2


async def test_conduit_limit_raises_immediately(make_harness) -> None:
    harness = await make_harness()
    for _ in range(5):
        await harness.client.create_conduit(1)

    started = time.monotonic()
    with pytest.raises(LimitReached) as caught:
        await harness.client.create_conduit(1)

    assert time.monotonic() - started < 0.5
    assert caught.value.status == 429
    assert "conduit limit" in caught.value.message


async def test_update_shards_deleted_conduit(make_harness) -> None:
    harness = await make_harness()
    conduit = await harness.client.create_conduit(1)
    await harness.client.delete_conduit(conduit.id)

    with pytest.raises(ConduitNotFound) as caught:
        await harness.client.update_shards(conduit.id, [websocket_update("0", "s")])

    assert caught.value.status == 404


async def test_rate_limit_waits_then_succeeds(make_harness) -> None:
    # A bucket of 1 point refilled every 0.12 s: the second quick call gets 429 with Remaining 0.
    harness = await make_harness(rate_limit_per_min=1, time_scale=0.002)
    await harness.client.get_conduits()

    started = time.monotonic()
    conduits = await harness.client.get_conduits()
    waited_s = time.monotonic() - started

    assert conduits == []
    assert waited_s >= 0.1
    # Ratelimit-Reset is a whole Unix second, so the wait can reach about 1 s plus the 0.05 s margin.
    assert waited_s < 1.3
    counters = await harness.control("GET", "/counters")
    assert counters["helix_calls"]["GET /eventsub/conduits"] == 3
    assert harness.client.ratelimit.limit == 1


async def test_rate_limit_no_wait_allowed(make_harness) -> None:
    harness = await make_harness(rate_limit_per_min=1, time_scale=0.002, client={"max_rate_limit_wait_s": 0.0})
    await harness.client.get_conduits()

    with pytest.raises(RateLimited) as caught:
        await harness.client.get_conduits()

    assert caught.value.status == 429
    assert caught.value.reset_at_s == harness.client.ratelimit.reset_at_s
    assert harness.client.ratelimit.remaining == 0


async def test_ratelimit_state_from_headers(make_harness) -> None:
    harness = await make_harness(rate_limit_per_min=50, time_scale=1.0)

    await harness.client.get_conduits()
    await harness.client.get_conduits()

    state = harness.client.ratelimit
    assert state.limit == 50
    assert state.remaining == 48
    assert time.time() <= state.reset_at_s <= time.time() + 4


async def test_invalidated_token_renewed_once(make_harness) -> None:
    harness = await make_harness()
    await harness.client.get_conduits()
    old_token = await harness.tokens.get()
    renewals_before = harness.tokens.renewals
    invalidated = await harness.control("POST", "/tokens/invalidate")

    conduits = await harness.client.get_conduits()

    assert invalidated["invalidated"] >= 1
    assert conduits == []
    assert harness.tokens.renewals == renewals_before + 1
    assert await harness.tokens.get() != old_token


async def test_missing_credentials_token_error(make_harness) -> None:
    harness = await make_harness(fleet={"client_id": "", "client_secret": ""})

    with pytest.raises(TokenError) as caught:
        await harness.client.get_conduits()

    assert "TWITCH_CLIENT_ID" in str(caught.value)
    assert "TWITCH_CLIENT_SECRET" in str(caught.value)


async def test_missing_secret_token_error(make_harness) -> None:
    harness = await make_harness(fleet={"client_secret": ""})

    with pytest.raises(TokenError, match="TWITCH_CLIENT_SECRET"):
        await harness.client.get_conduits()


async def test_wrong_secret_token_error(make_harness) -> None:
    harness = await make_harness(fleet={"client_secret": "wrong"})

    with pytest.raises(TokenError, match="HTTP 400"):
        await harness.client.get_conduits()

    assert harness.tokens.last_error == "HTTP 400"


async def test_get_shards_status_filter_paginated(make_harness) -> None:
    harness = await make_harness(page_size=2, bind_deadline_s=100)
    conduit = await harness.client.create_conduit(9)
    ws, session_id = await harness.open_session()
    bound = ["0", "3", "5", "6", "8"]
    await harness.client.update_shards(conduit.id, [websocket_update(shard_id, session_id) for shard_id in bound])

    enabled = await harness.client.get_shards(conduit.id, status="enabled")
    await ws.close()

    assert [shard.id for shard in enabled] == bound


async def test_get_subscriptions_paginated(make_harness) -> None:
    harness = await make_harness(page_size=2)
    conduit = await harness.client.create_conduit(1)
    for broadcaster in ("1", "2", "3", "4", "5"):
        await harness.client.create_subscription("stream.online", "1", {"broadcaster_user_id": broadcaster}, conduit.id)

    found, last_page = await harness.client.get_subscriptions()

    assert sorted(sub.condition["broadcaster_user_id"] for sub in found) == ["1", "2", "3", "4", "5"]
    assert last_page.total == 5
