"""Operations against a running fleet: API auth, metrics names, history samples, alerts, worker readiness."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.local import LOOPBACK

pytestmark = pytest.mark.timeout(120)

TOKEN = "ops-test-token"

COORDINATOR_METRICS = {
    "cf_leader", "cf_leader_epoch", "cf_shards", "cf_binds", "cf_update_shards_duration_seconds",
    "cf_update_shards_calls", "cf_helix_calls", "cf_helix_ratelimit_remaining", "cf_app_token_age_seconds",
    "cf_stream_length", "cf_conduit_usage_ratio", "cf_alerts_active",
}
WORKER_METRICS = {
    "cf_worker_shards", "cf_worker_binds", "cf_worker_bind_latency_seconds", "cf_worker_reconnects",
    "cf_worker_keepalive_timeouts", "cf_events_received", "cf_events_published", "cf_events_deduplicated",
    "cf_events_rejected", "cf_publish_latency_seconds",
}


async def metric_families(fleet, url: str) -> dict:
    async with fleet.http.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {family.name: family for family in text_string_to_metric_families(text)}


async def test_post_channels_without_token_changes_nothing(fleet):
    fleet.extra_env["CF_API_TOKEN"] = TOKEN
    await fleet.start(workers=0)
    base = f"http://{LOOPBACK}:{fleet.http_port}"
    await fleet.wait_for(lambda: _ok(fleet, "/healthz"), 15, "the coordinator API")
    body = orjson.dumps([{"broadcaster_user_id": "12826"}])

    async with fleet.http.post(f"{base}/api/channels", data=body) as response:
        status = response.status
    channels = await fleet.redis.hlen(fleet.keys.channels)
    async with fleet.http.post(f"{base}/api/channels", data=body, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        allowed = response.status

    assert status == 401
    assert channels == 0
    assert allowed == 200
    assert await fleet.redis.hlen(fleet.keys.channels) == 1


async def _ok(fleet, path: str) -> bool:
    try:
        status, _ = await fleet.api(path)
    except OSError:
        return False
    return status == 200


async def test_metrics_follow_names(fleet):
    fleet.shard_count = 2
    fleet.extra_env["CF_ALERT_INTERVAL_S"] = "0.5"
    await fleet.start(workers=1)
    await fleet.add_channels(3, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=3)
    await fleet.generate(rate=200, count=20)
    await fleet.wait_published(20)
    await fleet.wait_for(lambda: _has_history(fleet), 15, "history samples")

    coordinator = await metric_families(fleet, f"http://{LOOPBACK}:{fleet.http_port}/metrics")
    port = int(await fleet.redis.hget(fleet.keys.worker_info("worker-1"), "metrics_port"))
    worker = await metric_families(fleet, f"http://{LOOPBACK}:{port}/metrics")

    assert COORDINATOR_METRICS - coordinator.keys() == set()
    assert WORKER_METRICS - worker.keys() == set()
    for families in (coordinator, worker):
        for name, family in families.items():
            if name.startswith("cf_"):
                assert family.documentation, name
                assert family.type != "counter" or not name.endswith("_total"), name  # parser strips _total
    latency = worker["cf_publish_latency_seconds"]
    count = next(s.value for s in latency.samples if s.name == "cf_publish_latency_seconds_count")
    assert count >= 20


async def _has_history(fleet) -> bool:
    status, body = await fleet.api("/api/history")
    return status == 200 and len(body["samples"]) >= 2 and body["samples"][-1]["stream_length"] > 0


async def test_worker_lost_alert_fires_and_resolves(fleet):
    fleet.shard_count = 4
    fleet.extra_env["CF_ALERT_INTERVAL_S"] = "0.5"
    await fleet.start(workers=2)
    await fleet.wait_ready(subscriptions=0)

    fleet.kill("worker-2")

    async def resolved() -> bool:
        _, body = await fleet.api("/api/alerts")
        states = [(entry["state"], entry["name"]) for entry in body["recent"]]
        return ("resolved", "worker_lost:worker-2") in states

    await fleet.wait_for(resolved, 40, "worker_lost:worker-2 fired and resolved")
    _, body = await fleet.api("/api/alerts")
    states = [(entry["state"], entry["name"]) for entry in reversed(body["recent"])]
    assert states.count(("firing", "worker_lost:worker-2")) == 1
    assert states.count(("resolved", "worker_lost:worker-2")) == 1
    assert all(alert["name"] != "worker_lost:worker-2" for alert in body["active"])


async def test_worker_readyz_when_bound(fleet):
    fleet.shard_count = 2
    await fleet.start(workers=1)
    await fleet.wait_ready(subscriptions=0)
    port = int(await fleet.redis.hget(fleet.keys.worker_info("worker-1"), "metrics_port"))

    async with fleet.http.get(f"http://{LOOPBACK}:{port}/readyz") as response:
        body = await response.json()
        status = response.status

    assert status == 200
    assert body == {"ready": True, "shards": 2, "unbound": [], "draining": False}
