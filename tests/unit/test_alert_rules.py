"""AlertRules: every rule fires once on crossing, stays quiet while the condition holds, resolves once."""

from __future__ import annotations

import dataclasses

import pytest

from common.settings import Settings
from coordinator.alert_rules import AlertRules, Observation

NOW_MS = 10_000_000


def settings(**overrides) -> Settings:
    return Settings.from_env({}, **overrides)


def run(rules: AlertRules, **fields) -> list[tuple[str, str]]:
    observation = Observation(now_ms=fields.pop("now_ms", NOW_MS), **fields)
    return [(change.action, change.name) for change in rules.evaluate(observation)]


@pytest.mark.parametrize("name, threshold, below_margin, key", [
    ("capacity_warning", 80.0, 71.9, "usage_percentage"),
    ("capacity_critical", 90.0, 80.9, "usage_percentage"),
])
def test_capacity_fires_stays_resolves(name, threshold, below_margin, key):
    rules = AlertRules(settings())

    assert (("fire", name) in run(rules, **{key: threshold}))
    assert all(change[1] != name for change in run(rules, **{key: threshold + 1}))
    # Just under the threshold but within the margin: still active, nothing happens.
    assert all(change[1] != name for change in run(rules, **{key: threshold - 0.5}))
    assert ("resolve", name) in run(rules, **{key: below_margin})
    assert name not in rules.active
    assert all(change[1] != name for change in run(rules, **{key: below_margin}))


def test_capacity_below_threshold_stays_quiet():
    rules = AlertRules(settings())

    assert run(rules, usage_percentage=79.99) == []


def test_capacity_fire_carries_value_and_both_languages():
    rules = AlertRules(settings())

    changes = rules.evaluate(Observation(now_ms=NOW_MS, usage_percentage=91.25))
    critical = next(change for change in changes if change.name == "capacity_critical")

    assert critical.severity == "critical"
    assert critical.value in ("91.2", "91.3")
    assert "91" in critical.message
    assert "容量使用率" in critical.message_ja


@pytest.mark.parametrize("name, disabled_fire, disabled_resolve", [
    ("shards_disabled_warning", 2, 1),    # 10 % fires; 5 % is below 10 % minus the 10 % margin
    ("shards_disabled_critical", 6, 2),   # 30 % fires; 10 % is below 27 %
])
def test_disabled_shards_fire_stay_resolve(name, disabled_fire, disabled_resolve):
    rules = AlertRules(settings())

    assert ("fire", name) in run(rules, total_shards=20, disabled_shards=disabled_fire)
    assert all(change[1] != name for change in run(rules, total_shards=20, disabled_shards=disabled_fire))
    assert ("resolve", name) in run(rules, total_shards=20, disabled_shards=disabled_resolve)


def test_disabled_shards_skipped_without_shards():
    rules = AlertRules(settings())

    assert run(rules, total_shards=0, disabled_shards=0) == []


def test_disabled_message_names_counts():
    rules = AlertRules(settings())

    change = rules.evaluate(Observation(now_ms=NOW_MS, total_shards=10, disabled_shards=3))[0]

    assert change.message.startswith("3 of 10 shards disabled")
    assert "10 シャード中 3 シャードが無効" in change.message_ja


def test_shard_disconnected_scaled_by_time_scale():
    # 300 s times CF_TIME_SCALE 0.1 = 30 s of real time.
    rules = AlertRules(settings(time_scale=0.1))
    since = NOW_MS - 29_000

    assert run(rules, shards_down_since_ms={"3": since}) == []
    assert run(rules, shards_down_since_ms={"3": since}, now_ms=NOW_MS + 1_000) == [("fire", "shard_disconnected")]
    assert run(rules, shards_down_since_ms={"3": since, "4": NOW_MS}, now_ms=NOW_MS + 60_000) == []
    assert run(rules, shards_down_since_ms={}, now_ms=NOW_MS + 61_000) == [("resolve", "shard_disconnected")]


def test_shard_disconnected_lists_shards():
    rules = AlertRules(settings())

    change = rules.evaluate(Observation(now_ms=NOW_MS, shards_down_since_ms={"7": 0, "2": 0}))[0]

    assert "shards 2, 7" in change.message
    assert change.value == "2"


def test_legacy_connection_disconnected_fires_once_and_resolves():
    rules = AlertRules(settings(time_scale=0.1))
    since = NOW_MS - 29_000

    assert run(rules, legacy_down_since_ms={"legacy-1": since}) == []
    assert run(rules, legacy_down_since_ms={"legacy-1": since}, now_ms=NOW_MS + 1_000) == [
        ("fire", "legacy_connection_disconnected")]
    assert run(rules, legacy_down_since_ms={"legacy-1": since}, now_ms=NOW_MS + 2_000) == []
    assert run(rules, legacy_down_since_ms={}, now_ms=NOW_MS + 3_000) == [("resolve", "legacy_connection_disconnected")]


def test_helix_failures_fire_stay_resolve():
    rules = AlertRules(settings())

    assert run(rules, helix_consecutive_failures=2) == []
    assert run(rules, helix_consecutive_failures=3) == [("fire", "helix_failing")]
    assert run(rules, helix_consecutive_failures=7) == []
    assert run(rules, helix_consecutive_failures=0) == [("resolve", "helix_failing")]


def test_token_failure_fire_stay_resolve():
    rules = AlertRules(settings())

    assert run(rules, token_error="HTTP 400") == [("fire", "token_renewal_failed")]
    assert run(rules, token_error="HTTP 400") == []
    assert run(rules, token_error="") == [("resolve", "token_renewal_failed")]


def test_worker_lost_fire_stay_resolve():
    rules = AlertRules(settings())

    assert run(rules, lost_workers=["w1"], workers_with_bound_shards={"w1", "w2"}) == [("fire", "worker_lost:w1")]
    assert run(rules, workers_with_bound_shards={"w1", "w2"}) == []
    assert run(rules, workers_with_bound_shards={"w2"}) == [("resolve", "worker_lost:w1")]
    assert run(rules, workers_with_bound_shards={"w2"}) == []


def test_consumer_lag_fire_stay_resolve():
    rules = AlertRules(settings(alert_consumer_lag=1000))

    assert run(rules, consumer_lag={"billing": 999}) == []
    assert run(rules, consumer_lag={"billing": 1000, "chat": 5}) == [("fire", "consumer_lag")]
    assert run(rules, consumer_lag={"billing": 950}) == []
    assert run(rules, consumer_lag={"billing": 899}) == [("resolve", "consumer_lag")]


def test_consumer_lag_unknown_is_skipped():
    rules = AlertRules(settings(alert_consumer_lag=10))

    assert run(rules, consumer_lag=None) == []


def test_rules_seeded_with_active_do_not_fire_again():
    rules = AlertRules(settings(), active={"helix_failing"})

    assert run(rules, helix_consecutive_failures=5) == []
    assert run(rules, helix_consecutive_failures=0) == [("resolve", "helix_failing")]


def test_observation_defaults_fire_nothing():
    rules = AlertRules(settings())

    assert rules.evaluate(dataclasses.replace(Observation(now_ms=NOW_MS))) == []
