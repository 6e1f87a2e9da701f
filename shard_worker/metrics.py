"""Prometheus metrics of a shard worker."""

from prometheus_client import Counter, Gauge, Histogram

BINDS = Counter("cf_worker_binds_total", "Bind attempts by result", ["result"])
BIND_LATENCY = Histogram(
    "cf_worker_bind_latency_seconds", "Time from a session's welcome to its bind answer",
    buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
RECONNECTS = Counter("cf_worker_reconnects_total", "New sessions opened for a shard, by cause", ["cause"])
KEEPALIVE_TIMEOUTS = Counter("cf_worker_keepalive_timeouts_total", "Sockets declared dead by the keepalive watchdog")
EVENTS_RECEIVED = Counter("cf_events_received_total", "Notification and revocation frames received")
EVENTS_REJECTED = Counter("cf_events_rejected_total", "Frames rejected, by reason", ["reason"])
SHARDS = Gauge("cf_worker_shards", "Shards this worker runs, by state", ["state"])
