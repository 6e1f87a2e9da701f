"""Alert rules: plain observations in, alert changes out, so every rule is testable without Redis.

Thresholds follow the operators' plan: usage >= 80 % warning and >= 90 % critical; disabled shards
>= 10 % warning and >= 30 % critical; a shard not enabled for 5 minutes; 3 consecutive Helix failures;
a failed token renewal; a lost worker; a consumer group falling behind. A threshold alert resolves only
below its threshold minus `CF_ALERT_RESOLVE_MARGIN` of it, so a value hovering at the line does not
fire and resolve over and over.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from common.settings import Settings

USAGE_WARNING_PCT = 80.0
USAGE_CRITICAL_PCT = 90.0
DISABLED_WARNING_PCT = 10.0
DISABLED_CRITICAL_PCT = 30.0


@dataclasses.dataclass
class Observation:
    """The leader's inputs to one evaluation; a `None` value is not known yet and skips its rule."""

    now_ms: int
    usage_percentage: float | None = None
    total_shards: int = 0
    disabled_shards: int = 0
    # shard id -> when it was last seen leaving "enabled" (ms), for shards that are not enabled now
    shards_down_since_ms: dict[str, int] = dataclasses.field(default_factory=dict)
    helix_consecutive_failures: int = 0
    token_error: str = ""
    lost_workers: list[str] = dataclasses.field(default_factory=list)  # lost since the last evaluation
    workers_with_bound_shards: set[str] = dataclasses.field(default_factory=set)
    consumer_lag: dict[str, int] | None = None  # consumer group -> entries not yet delivered to it
    # legacy connection name (legacy-0) -> since when (ms) it has channels but no subscribed session
    legacy_down_since_ms: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Change:
    """One alert change for `Alerts`: `action` is "fire" or "resolve"."""

    action: str
    name: str
    severity: str = ""
    message: str = ""
    message_ja: str = ""
    value: str = ""


@dataclasses.dataclass
class _Threshold:
    name: str
    severity: str
    threshold: float
    measure: Callable[[Observation], float | None]
    describe: Callable[[Observation, float], tuple[str, str]]


def _fmt(number: float) -> str:
    return f"{number:.1f}".rstrip("0").rstrip(".")


def _disabled_pct(obs: Observation) -> float | None:
    if not obs.total_shards:
        return None
    return 100 * obs.disabled_shards / obs.total_shards


def _max_lag(obs: Observation) -> float | None:
    if obs.consumer_lag is None:
        return None
    return float(max(obs.consumer_lag.values(), default=0))


class AlertRules:
    """Turns observations into fire and resolve changes, each once per crossing."""

    def __init__(self, settings: Settings, active: set[str] | None = None) -> None:
        self._settings = settings
        self._margin = settings.alert_resolve_margin
        self.active: set[str] = set(active or ())
        self._thresholds = [
            _Threshold("capacity_warning", "warning", USAGE_WARNING_PCT, lambda o: o.usage_percentage, self._capacity_text),
            _Threshold("capacity_critical", "critical", USAGE_CRITICAL_PCT, lambda o: o.usage_percentage, self._capacity_text),
            _Threshold("shards_disabled_warning", "warning", DISABLED_WARNING_PCT, _disabled_pct, self._disabled_text),
            _Threshold("shards_disabled_critical", "critical", DISABLED_CRITICAL_PCT, _disabled_pct, self._disabled_text),
            _Threshold("consumer_lag", "warning", float(settings.alert_consumer_lag), _max_lag, self._lag_text),
        ]

    def evaluate(self, obs: Observation) -> list[Change]:
        """Return the alert changes this observation causes and remember which alerts are active."""
        changes: list[Change] = []
        for rule in self._thresholds:
            changes.extend(self._threshold(rule, obs))
        changes.extend(self._shard_disconnected(obs))
        changes.extend(self._legacy_disconnected(obs))
        changes.extend(self._helix(obs))
        changes.extend(self._token(obs))
        changes.extend(self._workers(obs))
        for change in changes:
            if change.action == "fire":
                self.active.add(change.name)
            else:
                self.active.discard(change.name)
        return changes

    # -- threshold rules ------------------------------------------------------------------------

    def _threshold(self, rule: _Threshold, obs: Observation) -> list[Change]:
        value = rule.measure(obs)
        if value is None:
            return []
        if rule.name not in self.active and value >= rule.threshold:
            message, message_ja = rule.describe(obs, rule.threshold)
            return [Change("fire", rule.name, rule.severity, message, message_ja, _fmt(value))]
        if rule.name in self.active and value < rule.threshold * (1 - self._margin):
            return [Change("resolve", rule.name, rule.severity, f"back to {_fmt(value)}",
                           f"{_fmt(value)} に戻りました", _fmt(value))]
        return []

    @staticmethod
    def _capacity_text(obs: Observation, threshold: float) -> tuple[str, str]:
        usage = _fmt(obs.usage_percentage or 0)
        if threshold >= USAGE_CRITICAL_PCT:
            return (f"Conduit capacity critical: usage {usage} % (critical at {_fmt(threshold)} %)",
                    f"Conduit の容量使用率が危険な水準です: {usage} %（{_fmt(threshold)} % でクリティカル）")
        return (f"Conduit capacity approaching limit: usage {usage} % (warning at {_fmt(threshold)} %)",
                f"Conduit の容量使用率が上限に近づいています: {usage} %（{_fmt(threshold)} % で警告）")

    @staticmethod
    def _disabled_text(obs: Observation, threshold: float) -> tuple[str, str]:
        pct = _fmt(_disabled_pct(obs) or 0)
        level, level_ja = ("critical", "クリティカル") if threshold >= DISABLED_CRITICAL_PCT else ("warning", "警告")
        return (f"{obs.disabled_shards} of {obs.total_shards} shards disabled ({pct} %, {level} at {_fmt(threshold)} %)",
                f"{obs.total_shards} シャード中 {obs.disabled_shards} シャードが無効です"
                f"（{pct} %、{_fmt(threshold)} % で{level_ja}）")

    def _lag_text(self, obs: Observation, threshold: float) -> tuple[str, str]:
        lag = obs.consumer_lag or {}
        group = max(lag, key=lag.get) if lag else ""
        return (f"consumer group {group} is {lag.get(group, 0)} entries behind (alert at {int(threshold)})",
                f"コンシューマーグループ {group} の未読エントリーが {lag.get(group, 0)} 件あります（{int(threshold)} 件でアラート）")

    # -- state rules ----------------------------------------------------------------------------

    def _shard_disconnected(self, obs: Observation) -> list[Change]:
        name = "shard_disconnected"
        limit_ms = self._settings.scaled(self._settings.alert_shard_disconnected_s) * 1000
        down = sorted((shard for shard, since in obs.shards_down_since_ms.items() if obs.now_ms - since >= limit_ms),
                      key=int)
        minutes = _fmt(self._settings.alert_shard_disconnected_s / 60)
        if down and name not in self.active:
            listed = ", ".join(down[:20]) + (f" and {len(down) - 20} more" if len(down) > 20 else "")
            listed_ja = ", ".join(down[:20]) + (f" ほか {len(down) - 20} 件" if len(down) > 20 else "")
            return [Change("fire", name, "critical",
                           f"shards {listed} not enabled for {minutes} minutes or more",
                           f"シャード {listed_ja} が {minutes} 分以上切断されています", str(len(down)))]
        if not down and name in self.active:
            return [Change("resolve", name, "critical", "no shard has been down that long any more",
                           "長時間切断されているシャードはなくなりました")]
        return []

    def _legacy_disconnected(self, obs: Observation) -> list[Change]:
        name = "legacy_connection_disconnected"
        limit_ms = self._settings.scaled(self._settings.alert_shard_disconnected_s) * 1000
        down = sorted(slot for slot, since in obs.legacy_down_since_ms.items() if obs.now_ms - since >= limit_ms)
        minutes = _fmt(self._settings.alert_shard_disconnected_s / 60)
        if down and name not in self.active:
            listed = ", ".join(down)
            return [Change("fire", name, "critical",
                           f"legacy WebSocket connections {listed} have had no subscribed session for {minutes} minutes or more",
                           f"レガシー WebSocket 接続 {listed} が {minutes} 分以上切断されています", str(len(down)))]
        if not down and name in self.active:
            return [Change("resolve", name, "critical", "every legacy WebSocket connection is subscribed again",
                           "すべてのレガシー WebSocket 接続が復旧しました")]
        return []

    def _helix(self, obs: Observation) -> list[Change]:
        name = "helix_failing"
        failures = obs.helix_consecutive_failures
        if failures >= self._settings.alert_helix_failures and name not in self.active:
            return [Change("fire", name, "critical", f"{failures} consecutive Helix API calls failed",
                           f"Helix API の呼び出しが {failures} 回連続で失敗しました", str(failures))]
        if failures == 0 and name in self.active:
            return [Change("resolve", name, "critical", "a Helix API call succeeded again",
                           "Helix API の呼び出しが再び成功しました")]
        return []

    def _token(self, obs: Observation) -> list[Change]:
        name = "token_renewal_failed"
        if obs.token_error and name not in self.active:
            return [Change("fire", name, "critical", f"app access token renewal failed: {obs.token_error}",
                           f"App Access Token の更新に失敗しました: {obs.token_error}", obs.token_error)]
        if not obs.token_error and name in self.active:
            return [Change("resolve", name, "critical", "the app access token was renewed",
                           "App Access Token を更新しました")]
        return []

    def _workers(self, obs: Observation) -> list[Change]:
        changes = []
        for worker in obs.lost_workers:
            name = f"worker_lost:{worker}"
            if name not in self.active:
                changes.append(Change("fire", name, "warning",
                                      f"worker {worker} lost: no heartbeat within its lease; its shards move to other workers",
                                      f"ワーカー {worker} が応答しません（リース切れ）。シャードを他のワーカーへ移します",
                                      worker))
        for name in sorted(self.active):
            worker = name.partition(":")[2]
            if name.startswith("worker_lost:") and worker not in obs.workers_with_bound_shards \
                    and worker not in obs.lost_workers:
                changes.append(Change("resolve", name, "warning", f"every shard of worker {worker} is bound elsewhere",
                                      f"ワーカー {worker} のシャードはすべて他のワーカーで接続済みです", worker))
        return changes
