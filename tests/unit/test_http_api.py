"""The coordinator's HTTP API served in-process against a real Redis: auth, channels, views, dashboard."""

from __future__ import annotations

import aiohttp
import msgspec
import orjson
import pytest
from aiohttp import web

from common.channels import EntryState, EntryStateStore
from common.keys import Keys
from common.models import Subscription
from common.settings import Settings
from coordinator.http import create_api, preferred_language

TOKEN = "test-token-0123456789"


@pytest.fixture
async def api(redis_client):
    """Start the API on 127.0.0.1 with the given CF_API_TOKEN; return its base URL."""
    runners = []

    async def start(api_token: str = TOKEN) -> str:
        settings = Settings.from_env({}, api_token=api_token)
        status = lambda: {"coordinator": "c-1", "leader": True, "epoch": 7, "conduit_id": "abc"}  # noqa: E731
        runner = web.AppRunner(create_api(settings, redis_client, status), access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def request(http, method: str, url: str, *, token: str | None = None, body=None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.request(method, url, headers=headers, data=orjson.dumps(body) if body is not None else None) as response:
        return response.status, await response.json(content_type=None)


async def test_post_channels_without_token_401(api, http, redis_client):
    base = await api()

    status, body = await request(http, "POST", f"{base}/api/channels", body=[{"broadcaster_user_id": "12826"}])

    assert status == 401
    assert "Bearer" in body["error"]
    assert await redis_client.hlen(Keys().channels) == 0


async def test_post_channels_wrong_token_403(api, http, redis_client):
    base = await api()

    status, body = await request(http, "POST", f"{base}/api/channels", token="wrong",
                                 body=[{"broadcaster_user_id": "12826"}])

    assert status == 403
    assert body["error"] == "invalid bearer token"
    assert await redis_client.hlen(Keys().channels) == 0


async def test_empty_api_token_disables_changes(api, http, redis_client):
    base = await api(api_token="")

    status, body = await request(http, "POST", f"{base}/api/channels", token="",
                                 body=[{"broadcaster_user_id": "12826"}])
    delete_status, _ = await request(http, "DELETE", f"{base}/api/channels/12826", token="anything")

    assert status == 403
    assert "set CF_API_TOKEN" in body["error"]
    assert delete_status == 403
    assert await redis_client.hlen(Keys().channels) == 0


async def test_channels_add_list_remove(api, http):
    base = await api()
    channels = [
        {"broadcaster_user_id": "12826", "login": "twitch", "types": ["stream.online:1"]},
        {"broadcaster_user_id": 141981764, "types": "stream.online:1,channel.update:2", "transport_mode": "both"},
    ]

    added = await request(http, "POST", f"{base}/api/channels", token=TOKEN, body=channels)
    listed = await request(http, "GET", f"{base}/api/channels")
    removed = await request(http, "DELETE", f"{base}/api/channels/12826", token=TOKEN)
    missing = await request(http, "DELETE", f"{base}/api/channels/12826", token=TOKEN)
    after = await request(http, "GET", f"{base}/api/channels")

    assert added == (200, {"stored": 2})
    assert listed[1]["total"] == 2
    assert listed[1]["data"][0] == {"broadcaster_user_id": "12826", "login": "twitch", "types": ["stream.online:1"]}
    assert listed[1]["data"][1]["transport_mode"] == "both"
    assert removed == (200, {"removed": "12826"})
    assert missing[0] == 404
    assert [row["broadcaster_user_id"] for row in after[1]["data"]] == ["141981764"]


@pytest.mark.parametrize("body, fragment", [
    ([], "non-empty JSON list"),
    ({"channels": [{"login": "x"}]}, "channel 0: expected an object with broadcaster_user_id"),
    ([{"broadcaster_user_id": "12a"}], "invalid broadcaster id"),
    ([{"broadcaster_user_id": "1", "transport_mode": "pigeon"}], "invalid transport mode"),
    ([{"broadcaster_user_id": "1", "types": ["stream.online"]}], "expected 'type:version'"),
])
async def test_invalid_channels_400(api, http, redis_client, body, fragment):
    base = await api()

    status, answer = await request(http, "POST", f"{base}/api/channels", token=TOKEN, body=body)

    assert status == 400
    assert fragment in answer["error"]
    assert await redis_client.hlen(Keys().channels) == 0


async def test_invalid_json_400(api, http):
    base = await api()
    async with http.post(f"{base}/api/channels", data=b"{nope", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 400


async def test_subscriptions_summary(api, http, redis_client):
    keys = Keys()
    encoder = msgspec.json.Encoder()
    subs = [
        Subscription("s1", "stream.online", "1", {"broadcaster_user_id": "1"}),
        Subscription("s2", "stream.online", "1", {"broadcaster_user_id": "2"}, status="authorization_revoked"),
        Subscription("s3", "channel.update", "2", {"broadcaster_user_id": "1"}),
    ]
    await redis_client.hset(keys.subscriptions, mapping={sub.id: encoder.encode(sub) for sub in subs})
    await EntryStateStore(redis_client, keys).save({
        'channel.chat.message|1|{"broadcaster_user_id":"3","user_id":"3"}': EntryState(
            state="failed", reason="subscription missing proper authorization", type="channel.chat.message",
            version="1", condition={"broadcaster_user_id": "3", "user_id": "3"}),
    })
    base = await api()

    status, body = await request(http, "GET", f"{base}/api/subscriptions")

    assert status == 200
    assert body["total"] == 3
    assert body["by_status"] == {"enabled": 2, "authorization_revoked": 1}
    assert body["by_type"] == {"stream.online:1": 2, "channel.update:2": 1}
    assert body["needs_reconsent"] == [{"id": "s2", "type": "stream.online", "version": "1",
                                        "condition": {"broadcaster_user_id": "2"}, "reason": "authorization_revoked"}]
    assert body["failed"] == [{"type": "channel.chat.message", "version": "1",
                               "condition": {"broadcaster_user_id": "3", "user_id": "3"},
                               "reason": "subscription missing proper authorization", "state": "failed"}]


async def test_empty_views(api, http):
    base = await api()

    subscriptions = await request(http, "GET", f"{base}/api/subscriptions")
    alerts = await request(http, "GET", f"{base}/api/alerts")
    history = await request(http, "GET", f"{base}/api/history")
    migration = await request(http, "GET", f"{base}/api/migration")
    stats = await request(http, "GET", f"{base}/api/stats")

    assert subscriptions[1]["failed"] == []
    assert subscriptions[1]["needs_reconsent"] == []
    assert alerts == (200, {"active": [], "recent": []})
    assert history[1]["samples"] == []
    assert migration[1]["state"] == "not_started"
    assert stats[0] == 503


async def test_history_rates(api, http, redis_client):
    keys = Keys()
    for sample in ({"t_ms": 1000, "published": 0, "stream_length": 0},
                   {"t_ms": 6000, "published": 500, "stream_length": 500},
                   {"t_ms": 11000, "published": 100, "stream_length": 100}):
        await redis_client.lpush(keys.history, orjson.dumps(sample))
    base = await api()

    _, body = await request(http, "GET", f"{base}/api/history")

    assert [row["events_per_s"] for row in body["samples"]] == [None, 100.0, None]
    assert [row["stream_length"] for row in body["samples"]] == [0, 500, 100]


async def test_livez_and_metrics(api, http):
    base = await api()

    status, body = await request(http, "GET", f"{base}/livez")
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()

    assert status == 200
    assert body["ok"] is True
    assert "cf_leader 1.0" in text
    assert "cf_leader_epoch 7.0" in text


@pytest.mark.parametrize("header, language", [
    ("ja,en-US;q=0.9,en;q=0.8", "ja"),
    ("ja-JP", "ja"),
    ("en-US,en;q=0.9,ja;q=0.8", "en"),
    ("fr-FR,ja;q=0.5,en;q=0.4", "ja"),
    ("en;q=0.9,ja;q=0.95", "ja"),
    ("ja;q=0", "en"),
    ("", "en"),
    ("de", "en"),
])
def test_preferred_language(header, language):
    assert preferred_language(header) == language


async def test_dashboard_language_and_assets(api, http):
    base = await api()

    async with http.get(f"{base}/", headers={"Accept-Language": "ja,en;q=0.5"}) as response:
        japanese = await response.text()
        csp = response.headers["Content-Security-Policy"]
    async with http.get(f"{base}/?lang=en", headers={"Accept-Language": "ja"}) as response:
        english = await response.text()
    for asset in ("dashboard.js", "i18n.js", "dashboard.css"):
        async with http.get(f"{base}/dashboard/{asset}") as response:
            assert response.status == 200, asset

    assert '<html lang="ja">' in japanese
    assert '<html lang="en">' in english
    assert "default-src 'self'" in csp


def test_openapi_lists_every_route(redis_client):
    import yaml
    from pathlib import Path

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    app = create_api(Settings.from_env({}), redis_client, lambda: {})
    routes = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and not route.resource.canonical.startswith("/dashboard")}
    documented = {(method, path) for path, item in spec["paths"].items() for method in item}

    assert routes == documented
