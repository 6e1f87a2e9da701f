"""Alerts and their webhook: the stream, the active set, and delivery with retries to a local receiver."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson
import pytest
from aiohttp import web

from common.alerts import Alerts, WebhookNotifier, read_alerts, webhook_text
from common.keys import Keys
from common.local import free_port


@pytest.fixture
async def receiver():
    """A webhook receiver on 127.0.0.1 that returns 500 to the first `fail_first` posts."""
    received: list[dict] = []
    state = {"fail_first": 1, "calls": 0}

    async def hook(request: web.Request) -> web.Response:
        state["calls"] += 1
        if state["calls"] <= state["fail_first"]:
            return web.Response(status=500, text="try again")
        received.append(orjson.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/secret-path-token", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/hooks/secret-path-token", received, state
    await runner.cleanup()


async def test_webhook_retries_after_500(receiver, caplog):
    url, received, state = receiver
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as http:
        notifier = WebhookNotifier(url, http, base_delay_s=0.01, max_delay_s=0.05)

        accepted = await notifier.deliver("[WARNING] capacity_warning: usage 81 %")

    assert accepted is True
    assert state["calls"] == 2
    assert received == [{"text": "[WARNING] capacity_warning: usage 81 %",
                         "content": "[WARNING] capacity_warning: usage 81 %"}]
    assert "retrying" in caplog.text
    assert "secret-path-token" not in caplog.text


async def test_webhook_gives_up_after_attempts(receiver, caplog):
    url, received, state = receiver
    state["fail_first"] = 100
    async with aiohttp.ClientSession() as http:
        notifier = WebhookNotifier(url, http, attempts=3, base_delay_s=0.01, max_delay_s=0.02)

        accepted = await notifier.deliver("text")

    assert accepted is False
    assert state["calls"] == 3
    assert notifier.failed == 1
    assert "secret-path-token" not in caplog.text


async def test_webhook_unreachable_not_logged(caplog):
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as http:
        port = free_port()  # nothing listens there, so the connection is refused at once
        notifier = WebhookNotifier(f"http://127.0.0.1:{port}/hooks/secret-path-token", http, attempts=2,
                                   base_delay_s=0.01)

        assert await notifier.deliver("text") is False

    assert "secret-path-token" not in caplog.text
    assert f"127.0.0.1:{port}" not in caplog.text


async def test_alerts_fire_once_to_stream_webhook_and_active(redis_client, receiver):
    url, received, state = receiver
    state["fail_first"] = 0
    keys = Keys()
    async with aiohttp.ClientSession() as http:
        notifier = WebhookNotifier(url, http, base_delay_s=0.01)
        notifier.start()
        alerts = Alerts(redis_client, keys, notifier)

        await alerts.fire("helix_failing", "critical", "3 consecutive Helix API calls failed", "3", "Helix API が失敗")
        await alerts.fire("helix_failing", "critical", "again", "4")
        await alerts.resolve("helix_failing", "a Helix API call succeeded again")
        await alerts.resolve("helix_failing", "twice")
        await notifier.close()

    entries = await redis_client.xrange(keys.alerts)
    assert [fields[b"state"] for _, fields in entries] == [b"firing", b"resolved"]
    assert entries[0][1][b"value"] == b"3"
    assert await redis_client.hlen(keys.alerts_active) == 0
    assert [body["text"].splitlines()[0] for body in received] == [
        "[CRITICAL] helix_failing: 3 consecutive Helix API calls failed",
        "[RESOLVED] helix_failing: a Helix API call succeeded again",
    ]
    assert received[0]["text"].splitlines()[1] == "Helix API が失敗"


async def test_new_leader_loads_active_alerts(redis_client):
    keys = Keys()
    await Alerts(redis_client, keys).fire("token_renewal_failed", "critical", "renewal failed", "HTTP 400")

    successor = Alerts(redis_client, keys)
    await successor.load()
    await successor.fire("token_renewal_failed", "critical", "renewal failed", "HTTP 400")
    listed = await read_alerts(redis_client, keys)

    assert list(successor.active) == ["token_renewal_failed"]
    assert len(await redis_client.xrange(keys.alerts)) == 1
    assert [alert["name"] for alert in listed["active"]] == ["token_renewal_failed"]
    assert listed["recent"][0]["state"] == "firing"


def test_webhook_text_fits_discord_limit():
    text = webhook_text("firing", {"name": "x", "severity": "warning", "message": "m" * 5000})

    assert len(text) == 2000
    assert text.startswith("[WARNING] x: ")


def test_webhook_url_redacted():
    from common.settings import Settings

    settings = Settings.from_env({"CF_ALERT_WEBHOOK_URL": "https://hooks.example.invalid/T000/secret"})

    assert settings.redacted()["alert_webhook_url"] == "***"


@pytest.mark.parametrize("env, value", [
    ("CF_ALERT_WEBHOOK_URL", "hooks.example.invalid/x"),
    ("CF_ALERT_RESOLVE_MARGIN", "1.0"),
    ("CF_ALERT_INTERVAL_S", "0"),
    ("CF_ALERT_CONSUMER_LAG", "0"),
])
def test_alert_settings_validated(env, value):
    from common.errors import SettingsError
    from common.settings import Settings

    with pytest.raises(SettingsError, match=env):
        Settings.from_env({env: value})
