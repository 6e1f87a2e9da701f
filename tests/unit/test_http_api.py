"""The coordinator's HTTP API served in-process against a real Redis: auth, channels, views, dashboard."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
import orjson
import pytest
from aiohttp import web

from common.alerts import Alerts
from common.channels import ChannelStore, EntryState, EntryStateStore, make_channel
from common.helix import HelixClient
from common.keys import Keys
from common.models import Subscription
from common.settings import Settings
from common.token import AppTokenManager
from coordinator import views
from coordinator.http import create_api, preferred_language
from coordinator.migration import MigrationController

TOKEN = "test-token-0123456789"


@pytest.fixture
async def api(redis_client):
    """Start the API on 127.0.0.1 with the given CF_API_TOKEN; return its base URL."""
    runners = []

    async def start(api_token: str = TOKEN, **overrides) -> str:
        settings = Settings.from_env({}, api_token=api_token, **overrides)
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
    assert listed[1]["data"][0] == {"broadcaster_user_id": "12826", "login": "twitch", "types": ["stream.online:1"],
                                    "transport_mode": "conduit", "fallback": False}
    assert listed[1]["data"][1]["transport_mode"] == "both"
    assert listed[1]["data"][1]["fallback"] is False
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
    assert migration[0] == 200
    assert migration[1]["status"] == "not_started"
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


# -- migration and transport modes ---------------------------------------------------------------

MIGRATION_COMMANDS = ("start", "pause", "resume", "rollback")


async def store_channels(redis_client, modes: dict[str, str], settings: Settings | None = None) -> ChannelStore:
    """Store one channel per broadcaster id with one event type, in the given transport mode."""
    store = ChannelStore(redis_client, Keys(), settings or Settings.from_env({}))
    await store.add([make_channel(b, types=["stream.online:1"], transport_mode=mode) for b, mode in modes.items()])
    return store


async def stored_modes(redis_client) -> dict[str, tuple[str, bool]]:
    channels = await ChannelStore(redis_client, Keys(), Settings.from_env({})).list()
    return {c.broadcaster_user_id: (c.transport_mode, c.fallback) for c in channels}


@pytest.fixture
async def controller(start_emulator, redis_client):
    """Run the leader's migration controller against the emulator, as the leader does, until the test ends."""
    emulator = await start_emulator()
    # No fallback: the controller then makes no Helix call, and the tests control every change.
    settings = emulator.fleet_settings(fallback_after_s=0, time_scale=0.05)
    async with aiohttp.ClientSession() as session:
        helix = HelixClient(settings, AppTokenManager(settings, redis_client, session), session)
        migration = MigrationController(settings, redis_client, redis_client, helix, Alerts(redis_client, Keys()))
        task = asyncio.create_task(migration.run())
        yield migration
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_migration_report_counts_modes(api, http, redis_client):
    await store_channels(redis_client, {"1": "websocket", "2": "websocket", "3": "both", "4": "conduit"})
    await ChannelStore(redis_client, Keys(), Settings.from_env({})).set_mode(["2"], "websocket", fallback=True)
    base = await api()

    status, report = await request(http, "GET", f"{base}/api/migration")

    assert status == 200
    assert report["status"] == "not_started"
    assert report["channels"] == {"websocket": 2, "both": 1, "conduit": 1, "fallback": 1, "total": 4}
    assert report["conduit_percent"] == 25.0
    assert report["legacy"]["capacity"] == 900
    assert report["legacy"]["used"] == 3
    assert sorted(report["legacy"]["load"]) == ["0", "1", "2"]
    assert report["comparison"]["current_batch"] is None
    assert set(report["comparison"]["all_time"]["transports"]) == {"conduit", "websocket"}
    assert report["rollback"] == {}


@pytest.mark.parametrize("command", MIGRATION_COMMANDS)
async def test_migration_command_without_token_401(api, http, redis_client, command):
    base = await api()

    status, body = await request(http, "POST", f"{base}/api/migration/{command}")

    assert status == 401
    assert "Bearer" in body["error"]
    assert await redis_client.llen(Keys().migration_commands) == 0


@pytest.mark.parametrize("command", MIGRATION_COMMANDS)
async def test_migration_command_wrong_token_403(api, http, redis_client, command):
    base = await api()

    status, body = await request(http, "POST", f"{base}/api/migration/{command}", token="wrong")

    assert status == 403
    assert body["error"] == "invalid bearer token"
    assert await redis_client.llen(Keys().migration_commands) == 0


async def test_migration_command_no_leader_503(api, http, redis_client, monkeypatch):
    monkeypatch.setattr(views, "MIGRATION_COMMAND_TIMEOUT_S", 0.3)
    base = await api()

    status, body = await request(http, "POST", f"{base}/api/migration/pause", token=TOKEN)

    assert status == 503
    assert "no coordinator leader responded to the 'pause' command" in body["error"]
    assert "stays queued" in body["error"]
    assert await redis_client.llen(Keys().migration_commands) == 1


@pytest.mark.parametrize("command, body, fragment", [
    ("start", {"phase": 0}, "invalid phase 0: expected 1 to 4"),
    ("start", {"phase": 5}, "invalid phase 5: expected 1 to 4"),
    ("start", {"phase": "2"}, "invalid phase='2' for start: expected a whole number"),
    ("start", {"phase": True}, "invalid phase=True for start"),
    ("rollback", {"all": "yes"}, "invalid all='yes' for rollback: expected a boolean"),
    ("pause", {"all": True}, "unknown field 'all' for pause: it accepts no fields"),
    ("start", {"all": True}, "unknown field 'all' for start: it accepts phase"),
    ("resume", [1], "expected a JSON object as the body of resume"),
])
async def test_migration_command_invalid_body_400(api, http, redis_client, command, body, fragment):
    base = await api()

    status, answer = await request(http, "POST", f"{base}/api/migration/{command}", token=TOKEN, body=body)

    assert status == 400
    assert fragment in answer["error"]
    assert await redis_client.llen(Keys().migration_commands) == 0


async def test_migration_command_invalid_json_400(api, http, redis_client):
    base = await api()

    async with http.post(f"{base}/api/migration/start", data=b"{nope",
                         headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        status = response.status
        answer = await response.json()

    assert status == 400
    assert "invalid JSON body" in answer["error"]
    assert await redis_client.llen(Keys().migration_commands) == 0


async def test_migration_commands_reach_controller(api, http, redis_client, controller):
    await store_channels(redis_client, {"11": "both", "12": "both"})
    base = await api()

    rejected = await request(http, "POST", f"{base}/api/migration/pause", token=TOKEN)
    rolled_back = await request(http, "POST", f"{base}/api/migration/rollback", token=TOKEN)
    after_rollback = await request(http, "GET", f"{base}/api/migration")
    started = await request(http, "POST", f"{base}/api/migration/start", token=TOKEN, body={"phase": 1})
    paused = await request(http, "POST", f"{base}/api/migration/pause", token=TOKEN)
    resumed = await request(http, "POST", f"{base}/api/migration/resume", token=TOKEN)
    nothing_left = await request(http, "POST", f"{base}/api/migration/rollback", token=TOKEN, body={"all": True})
    report = (await request(http, "GET", f"{base}/api/migration"))[1]

    assert rejected == (409, {"error": "the migration is not_started, not running"})
    assert rolled_back == (200, {"ok": True, "message": "2 channels back on websocket; the migration is paused"})
    assert after_rollback[1]["rollback"]["automatic"] is False
    assert after_rollback[1]["rollback"]["reason"] == "manual rollback of the parallel run"
    assert after_rollback[1]["channels"]["websocket"] == 2
    assert started == (200, {"ok": True, "message": "migration running through phase 1"})
    assert paused == (200, {"ok": True, "message": "migration paused; the current batch stays where it is, "
                                                   "and the rollback rules still apply to it"})
    assert resumed == (200, {"ok": True, "message": "migration resumed"})
    # The first batch (one channel, 10 % of two) is on both transports, so a rollback of everything applies.
    assert nothing_left[0] == 200, nothing_left
    assert nothing_left[1]["message"] == "1 channel back on websocket; the migration is paused"
    assert report["status"] == "paused"
    assert report["phase"] == 1
    assert report["phase_target_percent"] == 10
    assert report["channels"]["websocket"] == 2


async def test_channels_mode_moves_and_lists(api, http, redis_client):
    await store_channels(redis_client, {"21": "conduit", "22": "conduit", "23": "both"})
    base = await api()

    moved = await request(http, "POST", f"{base}/api/channels/mode", token=TOKEN,
                          body={"mode": "both", "broadcaster_ids": ["21", 22, "23"]})
    listed = await request(http, "GET", f"{base}/api/channels")
    back = await request(http, "POST", f"{base}/api/channels/mode", token=TOKEN,
                         body={"mode": "conduit", "broadcaster_ids": ["21", "22", "23"]})

    assert moved == (200, {"mode": "both", "changed": 2, "unchanged": 1})
    assert [row["transport_mode"] for row in listed[1]["data"]] == ["both", "both", "both"]
    assert back == (200, {"mode": "conduit", "changed": 3, "unchanged": 0})
    assert await redis_client.hlen(Keys().legacy_slots) == 0


async def test_channels_mode_clears_fallback(api, http, redis_client):
    store = await store_channels(redis_client, {"31": "conduit"})
    await store.set_mode(["31"], "websocket", fallback=True)
    base = await api()

    before = await request(http, "GET", f"{base}/api/channels")
    answer = await request(http, "POST", f"{base}/api/channels/mode", token=TOKEN,
                           body={"mode": "websocket", "broadcaster_ids": ["31"]})

    assert before[1]["data"][0]["fallback"] is True
    assert answer == (200, {"mode": "websocket", "changed": 1, "unchanged": 0})
    assert await stored_modes(redis_client) == {"31": ("websocket", False)}


async def test_channels_mode_over_capacity_400(api, http, redis_client):
    small = {"legacy_connections": 1, "legacy_subscriptions_per_connection": 2}
    await store_channels(redis_client, {"41": "conduit", "42": "conduit", "43": "conduit"}, Settings.from_env({}, **small))
    base = await api(**small)

    status, answer = await request(http, "POST", f"{base}/api/channels/mode", token=TOKEN,
                                   body={"mode": "websocket", "broadcaster_ids": ["41", "42", "43"]})

    assert status == 400
    assert "conduit" in answer["error"]
    assert "CF_LEGACY_CONNECTIONS" in answer["error"]
    assert await stored_modes(redis_client) == {b: ("conduit", False) for b in ("41", "42", "43")}
    assert await redis_client.hlen(Keys().legacy_slots) == 0


async def test_channels_add_over_capacity_400(api, http, redis_client):
    base = await api(legacy_connections=1, legacy_subscriptions_per_connection=1)
    body = [{"broadcaster_user_id": b, "types": ["stream.online:1"], "transport_mode": "websocket"} for b in ("51", "52")]

    status, answer = await request(http, "POST", f"{base}/api/channels", token=TOKEN, body=body)

    assert status == 400
    assert "CF_LEGACY_CONNECTIONS" in answer["error"]
    assert await redis_client.hlen(Keys().channels) == 0


@pytest.mark.parametrize("body, fragment", [
    ([], "expected a JSON object"),
    ({"broadcaster_ids": ["1"]}, "missing mode"),
    ({"mode": "pigeon", "broadcaster_ids": ["61"]}, "invalid transport mode 'pigeon'"),
    ({"mode": "both"}, "missing broadcaster_ids"),
    ({"mode": "both", "broadcaster_ids": []}, "missing broadcaster_ids"),
    ({"mode": "both", "broadcaster_ids": ["6x"]}, "broadcaster_ids[0]: invalid broadcaster id '6x'"),
    ({"mode": "both", "broadcaster_ids": ["61", None]}, "broadcaster_ids[1]: expected a numeric Twitch user id"),
    ({"mode": "both", "broadcaster_ids": ["61", "99"]}, "unknown channels 99"),
])
async def test_channels_mode_invalid_400(api, http, redis_client, body, fragment):
    await store_channels(redis_client, {"61": "conduit"})
    base = await api()

    status, answer = await request(http, "POST", f"{base}/api/channels/mode", token=TOKEN, body=body)

    assert status == 400
    assert fragment in answer["error"]
    assert await stored_modes(redis_client) == {"61": ("conduit", False)}


@pytest.mark.parametrize("token, expected", [(None, 401), ("wrong", 403)])
async def test_channels_mode_needs_token(api, http, redis_client, token, expected):
    await store_channels(redis_client, {"71": "conduit"})
    base = await api()

    status, _ = await request(http, "POST", f"{base}/api/channels/mode", token=token,
                              body={"mode": "websocket", "broadcaster_ids": ["71"]})

    assert status == expected
    assert await stored_modes(redis_client) == {"71": ("conduit", False)}
    assert await redis_client.hlen(Keys().legacy_slots) == 0
