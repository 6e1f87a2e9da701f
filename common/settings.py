"""One validated settings object, read from environment variables at start.

Every field names its environment variable, its default and its meaning in `SETTINGS_DOC`, which the
README's settings table is generated from (`conduit-fleet settings --markdown`). Production defaults
point at Twitch; `conduit-fleet dev`, the tests and the benchmarks point everything at the emulator on
127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from .errors import SettingsError

TWITCH_HELIX_URL = "https://api.twitch.tv/helix"
TWITCH_OAUTH_URL = "https://id.twitch.tv/oauth2"
TWITCH_EVENTSUB_WS_URL = "wss://eventsub.wss.twitch.tv/ws"

DEFAULT_EVENT_TYPES = "stream.online:1,stream.offline:1,channel.update:2"


def _field(env: str, default: Any, doc: str, *, check: Callable[[Any], str | None] | None = None):
    return dataclasses.field(default=default, metadata={"env": env, "doc": doc, "check": check})


def _positive(value: float) -> str | None:
    return None if value > 0 else "a number greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "a number of 0 or more"


def _shard_count(value: int) -> str | None:
    # Twitch allows 1 to 20,000 shards per conduit (API reference, Create Conduits).
    return None if 1 <= value <= 20_000 else "an integer from 1 to 20000"


def _keepalive(value: int) -> str | None:
    # Twitch accepts keepalive_timeout_seconds from 10 to 600 (EventSub WebSocket reference).
    return None if 10 <= value <= 600 else "an integer from 10 to 600"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "a port number from 0 to 65535"


def _metrics_port(value: int) -> str | None:
    return None if -1 <= value <= 65535 else "-1 (off), 0 (any free port) or a port number up to 65535"


def _fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else "a number from 0 up to (not including) 1"


def _webhook_url(value: str) -> str | None:
    return None if value == "" or value.startswith(("http://", "https://")) else "empty, or an http:// or https:// URL"


def _phases(value: str) -> str | None:
    try:
        phases = [int(part) for part in value.split(",")]
    except ValueError:
        return "comma-separated percentages such as 10,30,70,100"
    if not phases or phases != sorted(set(phases)) or phases[0] < 1 or phases[-1] != 100:
        return "increasing percentages from 1 to 100 that end with 100, such as 10,30,70,100"
    return None


def _id_list(value: str) -> str | None:
    ids = [part.strip() for part in value.split(",") if part.strip()]
    return None if all(part.isdigit() for part in ids) else "comma-separated numeric broadcaster ids"


def _log_format(value: str) -> str | None:
    return None if value in ("text", "json") else "'text' or 'json'"


def _url(value: str) -> str | None:
    ok = value.startswith(("http://", "https://", "ws://", "wss://", "redis://", "rediss://", "unix://"))
    return None if ok else "a URL such as https://host/path or redis://host:6379/0"


def parse_event_types(text: str) -> list[tuple[str, str]]:
    """Parse 'type:version,type:version' into pairs; raise ValueError on a malformed entry."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, version = item.partition(":")
        if not sep or not name or not version:
            raise ValueError(f"invalid event type {item!r}: expected 'type:version', e.g. 'stream.online:1'")
        pairs.append((name.strip(), version.strip()))
    return pairs


def _event_types(value: str) -> str | None:
    try:
        return None if parse_event_types(value) else "at least one 'type:version' entry"
    except ValueError as exc:
        return str(exc)


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The fleet's configuration; build it with `Settings.from_env()`."""

    redis_url: str = _field("CF_REDIS_URL", "redis://127.0.0.1:6379/0", "Control Redis: leases, token, conduit, assignments, arq queue.", check=_url)
    events_redis_url: str = _field("CF_EVENTS_REDIS_URL", "", "Redis for event streams and dedup keys; empty means the control Redis.")
    key_prefix: str = _field("CF_KEY_PREFIX", "cf:", "Prefix of every Redis key the fleet writes.")
    client_id: str = _field("TWITCH_CLIENT_ID", "", "Twitch application client id.")
    client_secret: str = _field("TWITCH_CLIENT_SECRET", "", "Twitch application client secret (never logged).")
    user_access_token: str = _field("TWITCH_USER_ACCESS_TOKEN", "", "User access token for the WebSocket transport; used only until a refreshed one is stored in Redis (never logged).")
    user_refresh_token: str = _field("TWITCH_USER_REFRESH_TOKEN", "", "Refresh token of TWITCH_USER_ACCESS_TOKEN (never logged).")
    helix_url: str = _field("CF_HELIX_URL", TWITCH_HELIX_URL, "Helix API base URL.", check=_url)
    oauth_url: str = _field("CF_OAUTH_URL", TWITCH_OAUTH_URL, "OAuth base URL (token, validate, revoke).", check=_url)
    eventsub_ws_url: str = _field("CF_EVENTSUB_WS_URL", TWITCH_EVENTSUB_WS_URL, "EventSub WebSocket URL.", check=_url)
    conduit_id: str = _field("CF_CONDUIT_ID", "", "Conduit to adopt; empty adopts the stored or only conduit, else creates one.")
    shard_count: int = _field("CF_SHARD_COUNT", 10, "Shard count of a newly created conduit.", check=_shard_count)
    keepalive_timeout_s: int = _field("CF_KEEPALIVE_TIMEOUT_S", 10, "keepalive_timeout_seconds requested from Twitch (10-600).", check=_keepalive)
    keepalive_grace: float = _field("CF_KEEPALIVE_GRACE", 1.5, "A socket with no frame for keepalive x this factor is declared dead.", check=_positive)
    worker_heartbeat_s: float = _field("CF_WORKER_HEARTBEAT_S", 2.0, "Interval between worker heartbeats.", check=_positive)
    worker_lease_s: float = _field("CF_WORKER_LEASE_S", 10.0, "A worker without a heartbeat for this long loses its shards.", check=_positive)
    drain_timeout_s: float = _field("CF_DRAIN_TIMEOUT_S", 25.0, "On SIGTERM a worker hands its shards over for at most this long; keep it below the pod's termination grace period.", check=_positive)
    leader_lease_s: float = _field("CF_LEADER_LEASE_S", 10.0, "Coordinator leader lease.", check=_positive)
    leader_renew_s: float = _field("CF_LEADER_RENEW_S", 3.0, "Interval between leader lease renewals.", check=_positive)
    bind_batch_window_ms: int = _field("CF_BIND_BATCH_WINDOW_MS", 50, "Bind jobs arriving within this window share one Update Conduit Shards call.", check=_non_negative)
    bind_batch_max: int = _field("CF_BIND_BATCH_MAX", 100, "Maximum shards per Update Conduit Shards call (Twitch's limit is undocumented).", check=_positive)
    bind_deadline_s: float = _field("CF_BIND_DEADLINE_S", 10.0, "Twitch closes a session not bound within this time of its welcome.", check=_positive)
    shard_health_poll_s: float = _field("CF_SHARD_HEALTH_POLL_S", 60.0, "Interval between Get Conduit Shards polls.", check=_positive)
    reconcile_interval_s: float = _field("CF_RECONCILE_INTERVAL_S", 300.0, "Interval between full subscription reconciliations.", check=_positive)
    reconcile_concurrency: int = _field("CF_RECONCILE_CONCURRENCY", 8, "Create Subscription calls in flight at once.", check=_positive)
    subscriptions_per_shard: int = _field("CF_SUBSCRIPTIONS_PER_SHARD", 1000, "The reconciler grows the conduit to one shard per this many desired subscriptions (up to 20,000 shards); 0 turns it off.", check=_non_negative)
    stats_interval_s: float = _field("CF_STATS_INTERVAL_S", 5.0, "Interval between ConduitStats updates.", check=_positive)
    planned_capacity: int = _field("CF_PLANNED_CAPACITY", 100_000, "Subscriptions the operators plan for; used for the usage percentage.", check=_positive)
    default_event_types: str = _field("CF_DEFAULT_EVENT_TYPES", DEFAULT_EVENT_TYPES, "Event types (type:version, comma-separated) for channels that name none.", check=_event_types)
    dedup_ttl_s: int = _field("CF_DEDUP_TTL_S", 900, "Lifetime of a dedup claim; Twitch's replay window is 10 minutes.", check=_positive)
    replay_window_s: float = _field("CF_REPLAY_WINDOW_S", 600.0, "Notifications with an older message_timestamp are rejected.", check=_positive)
    stream_maxlen: int = _field("CF_STREAM_MAXLEN", 1_000_000, "Approximate maximum length of each event stream partition.", check=_positive)
    stream_partitions: int = _field("CF_STREAM_PARTITIONS", 4, "Number of event stream partitions (hash of broadcaster id).", check=_positive)
    publish_batch_max: int = _field("CF_PUBLISH_BATCH_MAX", 500, "Maximum events per publish round trip.", check=_positive)
    publish_buffer_max: int = _field("CF_PUBLISH_BUFFER_MAX", 100_000, "Events a worker keeps in memory while Redis is unreachable; beyond it they are counted as lost.", check=_positive)
    http_host: str = _field("CF_HTTP_HOST", "127.0.0.1", "Address the coordinator's HTTP API listens on.")
    http_port: int = _field("CF_HTTP_PORT", 8080, "Port of the coordinator's HTTP API.", check=_port)
    metrics_port: int = _field("CF_METRICS_PORT", 9100, "Port of a worker's /metrics and /healthz; 0 picks a free port, -1 turns it off.", check=_metrics_port)
    api_token: str = _field("CF_API_TOKEN", "", "Bearer token required by state-changing HTTP endpoints (never logged).")
    alert_webhook_url: str = _field("CF_ALERT_WEBHOOK_URL", "", "Slack- or Discord-compatible webhook that receives alerts; empty sends none (never logged).", check=_webhook_url)
    alert_interval_s: float = _field("CF_ALERT_INTERVAL_S", 5.0, "Interval between alert evaluations and dashboard history samples.", check=_positive)
    alert_resolve_margin: float = _field("CF_ALERT_RESOLVE_MARGIN", 0.1, "An alert resolves only below its threshold minus this fraction of it (hysteresis).", check=_fraction)
    alert_shard_disconnected_s: float = _field("CF_ALERT_SHARD_DISCONNECTED_S", 300.0, "A shard not enabled for this long raises an alert (scaled by CF_TIME_SCALE).", check=_positive)
    alert_helix_failures: int = _field("CF_ALERT_HELIX_FAILURES", 3, "Consecutive failed Helix calls that raise an alert.", check=_positive)
    alert_consumer_lag: int = _field("CF_ALERT_CONSUMER_LAG", 100_000, "Stream entries not yet read by a consumer group that raise an alert.", check=_positive)
    legacy_connections: int = _field("CF_LEGACY_CONNECTIONS", 3, "Legacy WebSocket connections (user token); Twitch allows 3 with enabled subscriptions per client and user.", check=_positive)
    legacy_subscriptions_per_connection: int = _field("CF_LEGACY_SUBSCRIPTIONS_PER_CONNECTION", 300, "Enabled subscriptions per legacy connection; Twitch allows 300.", check=_positive)
    legacy_first_subscription_s: float = _field("CF_LEGACY_FIRST_SUBSCRIPTION_S", 10.0, "Twitch closes a legacy connection with no subscription this long after its welcome.", check=_positive)
    identity_hash_window_s: int = _field("CF_IDENTITY_HASH_WINDOW_S", 10, "An event type without an id is deduplicated by a hash of its content only this long (s), so two equal events further apart are both published.", check=_positive)
    identity_dedup_grace_s: float = _field("CF_IDENTITY_DEDUP_GRACE_S", 120.0, "After a channel leaves the parallel run, its events keep being deduplicated by event identity this long, while the other transport's subscriptions are deleted.", check=_positive)
    migration_phases: str = _field("CF_MIGRATION_PHASES", "10,30,70,100", "Share of channels on the conduit at the end of each migration phase, in percent.", check=_phases)
    migration_batch: int = _field("CF_MIGRATION_BATCH", 50, "Channels moved to the parallel run at once.", check=_positive)
    migration_first_batch: int = _field("CF_MIGRATION_FIRST_BATCH", 20, "Size cap of the first batch (the plan's 10-20 channel trial).", check=_positive)
    migration_soak_s: float = _field("CF_MIGRATION_SOAK_S", 600.0, "How long a batch runs on both transports before it is judged.", check=_positive)
    migration_compare_grace_s: float = _field("CF_MIGRATION_COMPARE_GRACE_S", 30.0, "An event seen on one transport counts as missed on the other after this long.", check=_positive)
    migration_min_events: int = _field("CF_MIGRATION_MIN_EVENTS", 20, "Events a batch must have been compared on before loss and latency rules apply.", check=_positive)
    rollback_loss_ratio: float = _field("CF_ROLLBACK_LOSS_RATIO", 0.10, "Roll back when the conduit path misses this share of the parallel run's events.", check=_positive)
    rollback_latency_factor: float = _field("CF_ROLLBACK_LATENCY_FACTOR", 2.0, "Roll back when the conduit path's mean latency is this many times the legacy path's.", check=_positive)
    rollback_latency_floor_ms: float = _field("CF_ROLLBACK_LATENCY_FLOOR_MS", 100.0, "The latency rule applies only when the conduit path is also this many ms slower than the legacy path.", check=_non_negative)
    rollback_disconnects_per_hour: int = _field("CF_ROLLBACK_DISCONNECTS_PER_HOUR", 3, "Roll back after this many unexpected conduit socket losses within an hour.", check=_positive)
    rollback_helix_failures: int = _field("CF_ROLLBACK_HELIX_FAILURES", 5, "Roll back after this many Helix calls failed in a row.", check=_positive)
    fallback_after_s: float = _field("CF_FALLBACK_AFTER_S", 300.0, "Move conduit channels to the legacy connections when the Conduits API has failed this long; 0 turns the fallback off.", check=_non_negative)
    fallback_recover_s: float = _field("CF_FALLBACK_RECOVER_S", 300.0, "Move fallen-back channels to the conduit again after the Conduits API has worked this long.", check=_positive)
    fallback_priority: str = _field("CF_FALLBACK_PRIORITY", "", "Broadcaster ids (comma-separated) that fall back first; the rest follow in id order.", check=_id_list)
    worker_id: str = _field("CF_WORKER_ID", "", "Worker id; empty means hostname-pid.")
    time_scale: float = _field("CF_TIME_SCALE", 1.0, "Multiplies every lease, heartbeat and Twitch timer (tests shrink time with it).", check=_positive)
    log_format: str = _field("CF_LOG_FORMAT", "text", "'text' or 'json' log lines.", check=_log_format)
    log_level: str = _field("CF_LOG_LEVEL", "INFO", "Log level name.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from environment variables; raise SettingsError naming a bad variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            env = field.metadata["env"]
            if field.name in overrides:
                values[field.name] = overrides[field.name]
            elif env in environ:
                values[field.name] = _convert(env, environ[env], field.type)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError for the first field whose value is not allowed."""
        for field in dataclasses.fields(self):
            check = field.metadata["check"]
            value = getattr(self, field.name)
            problem = check(value) if check else None
            if problem:
                raise SettingsError(f"invalid {field.metadata['env']}={value!r}: expected {problem}")
        if self.worker_lease_s <= self.worker_heartbeat_s:
            raise SettingsError(
                f"invalid CF_WORKER_LEASE_S={self.worker_lease_s!r}: it must be longer than "
                f"CF_WORKER_HEARTBEAT_S={self.worker_heartbeat_s!r}"
            )
        if self.leader_lease_s <= self.leader_renew_s:
            raise SettingsError(
                f"invalid CF_LEADER_LEASE_S={self.leader_lease_s!r}: it must be longer than "
                f"CF_LEADER_RENEW_S={self.leader_renew_s!r}"
            )

    def replace(self, **changes: Any) -> Settings:
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings

    @property
    def events_url(self) -> str:
        return self.events_redis_url or self.redis_url

    @property
    def effective_worker_id(self) -> str:
        return self.worker_id or _default_worker_id()

    @property
    def legacy_capacity(self) -> int:
        return self.legacy_connections * self.legacy_subscriptions_per_connection

    @property
    def phase_targets(self) -> list[int]:
        return [int(part) for part in self.migration_phases.split(",")]

    @property
    def fallback_order(self) -> list[str]:
        return [part.strip() for part in self.fallback_priority.split(",") if part.strip()]

    @property
    def default_types(self) -> list[str]:
        """Return CF_DEFAULT_EVENT_TYPES as "type:version" entries, the form channels store."""
        return [f"{name}:{version}" for name, version in self.event_types]

    @property
    def event_types(self) -> list[tuple[str, str]]:
        return parse_event_types(self.default_event_types)

    def scaled(self, seconds: float) -> float:
        """Return a duration in real seconds: `seconds` of Twitch or lease time times CF_TIME_SCALE."""
        return seconds * self.time_scale

    def redacted(self) -> dict[str, Any]:
        """Return the settings as a dict with secrets replaced, safe to log or show."""
        shown = dataclasses.asdict(self)
        for name in ("client_secret", "api_token", "alert_webhook_url", "user_access_token", "user_refresh_token"):
            if shown[name]:
                shown[name] = "***"
        return shown


def _convert(env: str, raw: str, type_name: Any) -> Any:
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise SettingsError(f"invalid {env}={raw!r}: expected a {'whole number' if kind == 'int' else 'number'}") from None
    return raw


def settings_table() -> str:
    """Return the settings as a Markdown table (name, default, meaning) for the README."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(Settings):
        default = field.default if field.default != "" else "(empty)"
        rows.append(f"| `{field.metadata['env']}` | `{default}` | {field.metadata['doc']} |")
    return "\n".join(rows)
