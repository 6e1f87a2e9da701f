"""Prometheus gauges of the coordinator that describe the fleet as a whole.

The leader's monitor loop sets most of them, so on a standby replica they keep the last values it
saw as leader (or none). `cf_leader` and `cf_leader_epoch` are set on every replica at scrape time.
"""

from prometheus_client import Gauge

LEADER = Gauge("cf_leader", "1 when this coordinator replica is the leader, else 0")
LEADER_EPOCH = Gauge("cf_leader_epoch", "Fencing epoch of this replica's last term as leader")
SHARDS = Gauge("cf_shards", "Conduit shards by status as the fleet last recorded them", ["status"])
SUBSCRIPTIONS = Gauge("cf_subscriptions", "Conduit subscriptions by status", ["status"])
USAGE = Gauge("cf_conduit_usage_ratio", "Capacity usage: the highest of cost, subscription and shard ratios (0-1)")
STREAM_LENGTH = Gauge("cf_stream_length", "Entries in an event stream partition (XLEN)", ["partition"])
CONSUMER_LAG = Gauge("cf_stream_consumer_lag", "Entries a consumer group has not read yet, over all partitions", ["group"])
RATELIMIT_REMAINING = Gauge("cf_helix_ratelimit_remaining", "Ratelimit-Remaining of the last Helix answer (-1 before any)")
RATELIMIT_LIMIT = Gauge("cf_helix_ratelimit_limit", "Ratelimit-Limit of the last Helix answer, points per minute")
HELIX_CONSECUTIVE_FAILURES = Gauge("cf_helix_consecutive_failures", "Helix calls that failed in a row")
TOKEN_AGE = Gauge("cf_app_token_age_seconds", "Age of the shared app access token")
ALERTS_ACTIVE = Gauge("cf_alerts_active", "Active alerts by severity", ["severity"])


def set_labelled(gauge: Gauge, values: dict[str, float]) -> None:
    """Replace every label value of a one-label gauge, dropping labels that disappeared."""
    gauge.clear()
    for label, value in values.items():
        gauge.labels(label).set(value)
