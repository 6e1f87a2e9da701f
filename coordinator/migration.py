"""The migration controller (leader only): phases, batches, soak, judgement, rollback and fallback.

Each phase brings the share of channels on the conduit up to its target (CF_MIGRATION_PHASES, default
10, 30, 70 and 100 %). A batch of CF_MIGRATION_BATCH channels goes from `websocket` to `both`. The
first batch, while nothing is on the conduit, has at most CF_MIGRATION_FIRST_BATCH channels. Once the
batch's conduit subscriptions exist and one comparison grace window has passed, it soaks for
CF_MIGRATION_SOAK_S while the two transports are compared. If no rollback rule fired, it goes to
`conduit` and the legacy subscriptions are deleted. Every step is stored in `cf:migration` before the next one starts, so a new leader resumes
where the old one stopped.

The rollback rules are checked on the batch in `both` during warm-up and soak. They fire when the
conduit path missed at least CF_ROLLBACK_LOSS_RATIO of the compared events, its mean latency is at least
CF_ROLLBACK_LATENCY_FACTOR times the legacy path's, it lost CF_ROLLBACK_DISCONNECTS_PER_HOUR sockets
within an hour, or CF_ROLLBACK_HELIX_FAILURES Helix calls failed in a row. A rollback puts the
batch back on `websocket`, pauses the controller, records why and raises a critical alert.

Fallback: when the Conduits API has failed for CF_FALLBACK_AFTER_S, conduit channels move to the legacy
connections (as many as fit, CF_FALLBACK_PRIORITY first), and return through `both` once the API has
worked for CF_FALLBACK_RECOVER_S.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import msgspec
import redis.asyncio as redis
import redis.exceptions

from common.alerts import Alerts
from common.channels import ChannelError, ChannelStore
from common.errors import FleetError
from common.helix import HelixClient
from common.keys import Keys
from common.legacy import LegacyCapacityError, LegacySlots
from common.migration import MigrationState, load_state, save_state
from common.models import Channel, Subscription
from common.settings import Settings
from common.subscriptions import subscription_count
from .comparison import Comparison, summarize

log = logging.getLogger(__name__)

_subscription_decoder = msgspec.json.Decoder(Subscription)
RESULT_TTL_S = 3600


class Verdict(msgspec.Struct):
    rollback: bool
    reasons: list[tuple[str, str]]  # (English, Japanese): the Japanese text is for the Japanese dashboard
    summary: dict

    def reason(self) -> tuple[str, str]:
        return "; ".join(en for en, _ in self.reasons), "。".join(ja for _, ja in self.reasons)


def pause(state: MigrationState, reason: str, reason_ja: str) -> None:
    """Pause the migration with a reason in English and Japanese."""
    state.status = "paused"
    state.paused_reason, state.paused_reason_ja = reason, reason_ja


def clear_pause(state: MigrationState) -> None:
    state.paused_reason = state.paused_reason_ja = ""


class MigrationController:
    """Runs on the leader; `run()` ticks until cancelled."""

    def __init__(self, settings: Settings, client: redis.Redis, events: redis.Redis, helix: HelixClient,
                 alerts: Alerts, *, clock=time.time) -> None:
        self._settings = settings
        self._client = client
        self._keys = Keys(settings.key_prefix)
        self._helix = helix
        self._alerts = alerts
        self._clock = clock
        self.store = ChannelStore(client, self._keys, settings)
        self.slots = LegacySlots(client, self._keys, settings)
        self.comparison = Comparison(settings, client, events)
        self.wake = asyncio.Event()
        self._probed_at_s = 0.0
        self._pruned_at_s = 0.0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def run(self) -> None:
        interval_s = max(0.2, self._settings.scaled(2.0))
        while True:
            try:
                await self.tick()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("migration tick failed: %s", exc)
            try:
                await asyncio.wait_for(self.wake.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def tick(self) -> MigrationState:
        await self.comparison.poll()
        await self._prune_identity()
        state = await load_state(self._client, self._keys)
        state.helix_consecutive_failures = self._helix.consecutive_failures
        await self._run_commands(state)
        await self._fallback(state)
        if state.status == "running":
            await self._advance(state)
        elif state.status == "paused" and state.step in ("warming", "soaking"):
            # A paused batch still runs on both transports, so the rollback rules keep applying.
            verdict = await self._judge(state)
            if verdict.rollback:
                await self._rollback(state, state.batch, verdict.reason(), automatic=True, summary=verdict.summary)
        await save_state(self._client, self._keys, state)
        return state

    # -- commands ---------------------------------------------------------------------------------

    async def _run_commands(self, state: MigrationState) -> None:
        while True:
            raw = await self._client.lpop(self._keys.migration_commands)
            if raw is None:
                return
            try:
                command = msgspec.json.decode(raw)
                message = await self._execute(state, command)
                answer = {"ok": True, "message": message}
            except (MigrationRefused, ChannelError, LegacyCapacityError) as exc:
                answer = {"ok": False, "message": str(exc)}
            except (msgspec.DecodeError, AttributeError) as exc:
                answer = {"ok": False, "message": f"unreadable command {raw[:200]!r}: {exc}"}
                command = {"id": ""}
            log.info("migration command %s: %s", command.get("command"), answer["message"])
            await save_state(self._client, self._keys, state)
            if command.get("id"):
                await self._client.set(self._keys.migration_result(command["id"]), msgspec.json.encode(answer),
                                       ex=RESULT_TTL_S)

    async def _execute(self, state: MigrationState, command: dict) -> str:
        name = command.get("command")
        if name == "start":
            if state.status == "completed":
                raise MigrationRefused("the migration is complete: every channel is on the conduit")
            if state.fallback.get("state") in ("active", "returning"):
                raise MigrationRefused("channels are on the legacy connections because the Conduits API failed; "
                                       "start again once they are back on the conduit")
            state.status = "running"
            state.stop_after_phase = int(command.get("phase") or 0)
            clear_pause(state)
            state.started_at_ms = state.started_at_ms or self._now_ms()
            target = f"through phase {state.stop_after_phase}" if state.stop_after_phase else "through the last phase"
            return f"migration running {target}"
        if name == "pause":
            if state.status != "running":
                raise MigrationRefused(f"the migration is {state.status}, not running")
            pause(state, "paused by an operator", "オペレーターが一時停止しました")
            return "migration paused; the current batch stays where it is, and the rollback rules still apply to it"
        if name == "resume":
            if state.status != "paused":
                raise MigrationRefused(f"the migration is {state.status}, not paused; use `migrate start`")
            if state.fallback.get("state") in ("active", "returning"):
                raise MigrationRefused("channels are on the legacy connections because the Conduits API failed; "
                                       "resume once they are back on the conduit")
            state.status = "running"
            clear_pause(state)
            return "migration resumed"
        if name == "rollback":
            channels = await self.store.list()
            modes = ("both", "conduit") if command.get("all") else ("both",)
            ids = [c.broadcaster_user_id for c in channels if c.transport_mode in modes and not c.fallback]
            if not ids:
                raise MigrationRefused("no channel to roll back: none is in the parallel run"
                                       + (" or on the conduit" if command.get("all") else ""))
            reason = (("manual rollback of every channel", "全チャンネルの手動ロールバック") if command.get("all")
                      else ("manual rollback of the parallel run", "並行稼働中のチャンネルの手動ロールバック"))
            summary = summarize(self.comparison.totals, state.baseline) if state.baseline else {}
            await self._rollback(state, ids, reason, automatic=False, summary=summary)
            noun = "channel" if len(ids) == 1 else "channels"
            return f"{len(ids)} {noun} back on websocket; the migration is paused"
        raise MigrationRefused(f"unknown command {name!r}")

    # -- phases and batches -------------------------------------------------------------------------

    async def _advance(self, state: MigrationState) -> None:
        if state.step == "idle":
            await self._next_batch(state)
        elif state.step == "warming":
            await self._warm(state)
        elif state.step == "soaking":
            await self._soak(state)

    async def _next_batch(self, state: MigrationState) -> None:
        settings = self._settings
        targets = settings.phase_targets
        channels = await self.store.list()
        total = len(channels)
        on_conduit = sum(1 for c in channels if c.transport_mode == "conduit" and not c.fallback)
        # The phase is the first one whose target is not reached yet. It follows the share on the
        # conduit, so after `rollback --all` the migration starts again at phase 1 with its trial batch.
        phase = next((index + 1 for index, percent in enumerate(targets)
                      if on_conduit < math.ceil(total * percent / 100)), len(targets) + 1)

        for finished in range(max(state.phase, 1), phase):
            if state.stop_after_phase and finished >= state.stop_after_phase:
                state.phase = finished
                pause(state, f"phase {finished} ({targets[finished - 1]} %) reached; `conduit-fleet migrate resume` continues",
                      f"フェーズ {finished}（{targets[finished - 1]} %）に到達しました。"
                      "`conduit-fleet migrate resume` で続行します")
                state.stop_after_phase = 0
                return
            state.phase = finished
            self._record(state, "phase_done", [], {})
        if phase > len(targets):
            state.phase = len(targets)
            state.status = "completed"
            clear_pause(state)
            self._record(state, "completed", [], {})
            log.info("migration complete: %d channels on the conduit", on_conduit)
            return
        state.phase = phase
        target = math.ceil(total * targets[phase - 1] / 100)

        in_both = [c.broadcaster_user_id for c in channels if c.transport_mode == "both" and not c.fallback]
        waiting = [c.broadcaster_user_id for c in channels if c.transport_mode == "websocket" and not c.fallback]
        size = min(settings.migration_batch, target - on_conduit)
        if on_conduit == 0:
            size = min(size, settings.migration_first_batch)  # the trial batch, also after a full rollback
        batch = in_both[:size] + waiting[:max(0, size - len(in_both))]
        if not batch:
            return  # nothing movable yet (fallen-back channels); try again on the next tick

        await self.store.set_mode(batch, "both")
        now_ms = self._now_ms()
        state.batch = batch
        state.batch_number += 1
        state.batch_started_ms = now_ms
        state.batch_ready_ms = 0
        state.soak_started_ms = 0
        state.baseline = {}
        state.step = "warming"
        log.info("migration phase %d: batch %d of %d channels now on both transports",
                 state.phase, state.batch_number, len(batch))

    async def _warm(self, state: MigrationState) -> None:
        verdict = await self._judge(state)
        if verdict.rollback:
            await self._rollback(state, state.batch, verdict.reason(), automatic=True, summary=verdict.summary)
            return
        now_ms = self._now_ms()
        if not state.batch_ready_ms:
            if await self._conduit_ready(state.batch):
                state.batch_ready_ms = now_ms
                log.info("migration batch %d: conduit subscriptions in place", state.batch_number)
            return
        grace_ms = self._settings.scaled(self._settings.migration_compare_grace_s) * 1000
        if now_ms - state.batch_ready_ms >= grace_ms:
            state.baseline = self.comparison.snapshot()
            state.soak_started_ms = now_ms
            state.step = "soaking"

    async def _soak(self, state: MigrationState) -> None:
        verdict = await self._judge(state)
        if verdict.rollback:
            await self._rollback(state, state.batch, verdict.reason(), automatic=True, summary=verdict.summary)
            return
        if self._now_ms() - state.soak_started_ms < self._settings.scaled(self._settings.migration_soak_s) * 1000:
            return
        channels = {c.broadcaster_user_id: c for c in await self.store.list()}
        ids = [b for b in state.batch if b in channels and channels[b].transport_mode == "both"]
        if ids:
            await self.store.set_mode(ids, "conduit")
        # A previous leader may have moved part of the batch before it died; record the whole batch.
        moved = [b for b in state.batch if b in channels]
        self._record(state, "passed", moved, verdict.summary)
        log.info("migration batch %d passed its soak: %d channels on the conduit", state.batch_number, len(ids))
        self._clear_batch(state)

    def _clear_batch(self, state: MigrationState) -> None:
        state.batch = []
        state.step = "idle"
        state.baseline = {}
        state.batch_started_ms = state.batch_ready_ms = state.soak_started_ms = 0

    async def _judge(self, state: MigrationState) -> Verdict:
        settings = self._settings
        summary = summarize(self.comparison.totals, state.baseline or None) if state.baseline else {"compared": 0}
        reasons = []
        compared = summary.get("compared", 0)
        if compared >= settings.migration_min_events:
            conduit = summary["transports"]["conduit"]
            legacy = summary["transports"]["websocket"]
            if conduit["missed"] / compared >= settings.rollback_loss_ratio:
                share, limit = 100 * conduit["missed"] / compared, 100 * settings.rollback_loss_ratio
                reasons.append((f"the conduit path missed {conduit['missed']} of {compared} events "
                                f"({share:.1f} %, limit {limit:.0f} %)",
                                f"Conduit 経路が {compared} 件中 {conduit['missed']} 件のイベントを取りこぼしました"
                                f"（{share:.1f} %、上限 {limit:.0f} %）"))
            c_mean, l_mean = conduit["mean_latency_ms"], legacy["mean_latency_ms"]
            if (c_mean is not None and l_mean is not None and c_mean >= settings.rollback_latency_factor * l_mean
                    and c_mean - l_mean >= settings.rollback_latency_floor_ms):
                factor = settings.rollback_latency_factor
                reasons.append((f"the conduit path's mean latency is {c_mean:.0f} ms against {l_mean:.0f} ms on "
                                f"websocket (limit {factor:g}x)",
                                f"Conduit 経路の平均レイテンシが {c_mean:.0f} ms で、WebSocket の {l_mean:.0f} ms に対して"
                                f"上限（{factor:g} 倍）に達しました"))
        now_ms = self._now_ms()
        since_ms = max(state.batch_started_ms, now_ms - int(settings.scaled(3600) * 1000))
        disconnects = await self._client.zcount(self._keys.disconnects("conduit"), since_ms, "+inf")
        if disconnects >= settings.rollback_disconnects_per_hour:
            limit = settings.rollback_disconnects_per_hour
            reasons.append((f"{disconnects} conduit sockets were lost since the batch started (limit {limit} an hour)",
                            f"バッチ開始後に Conduit のソケットが {disconnects} 回切断されました（上限は 1 時間に {limit} 回）"))
        if self._helix.consecutive_failures >= settings.rollback_helix_failures:
            failures, limit = self._helix.consecutive_failures, settings.rollback_helix_failures
            reasons.append((f"{failures} Helix calls failed in a row (limit {limit})",
                            f"Helix の呼び出しが {failures} 回続けて失敗しました（上限 {limit} 回）"))
        summary["conduit_disconnects"] = disconnects
        return Verdict(rollback=bool(reasons), reasons=reasons, summary=summary)

    async def _rollback(self, state: MigrationState, ids: list[str], reasons: tuple[str, str], *, automatic: bool,
                        summary: dict | None = None) -> None:
        reason, reason_ja = reasons
        changed = await self.store.set_mode(ids, "websocket")
        now_ms = self._now_ms()
        state.rollback = {"at_ms": now_ms, "reason": reason, "reason_ja": reason_ja, "automatic": automatic,
                          "channels": len(ids), "batch": state.batch_number, "phase": state.phase}
        self._record(state, "rolled_back", ids, summary or {}, reason=reason)
        if state.status != "not_started":
            pause(state, f"rolled back: {reason}", f"ロールバックしました: {reason_ja}")
        self._clear_batch(state)
        kind = "automatic" if automatic else "manual"
        if automatic:
            log.error("migration automatic rollback of %d channels: %s", len(ids), reason)
        else:
            log.warning("migration manual rollback of %d channels: %s", len(ids), reason)
        await self._alerts.event(
            "migration_rolled_back", "critical",
            f"{kind} rollback: {len(changed)} channels are back on the legacy WebSocket connections "
            f"(reason: {reason}); the migration is paused (docs/migration.md, Rollback)",
            value=str(len(ids)),
            message_ja=f"{'自動' if automatic else '手動'}ロールバック: {len(changed)} チャンネルをレガシー WebSocket "
                       f"接続に戻しました（理由: {reason_ja}）。移行は一時停止中です")

    def _record(self, state: MigrationState, verdict: str, ids: list[str], summary: dict, reason: str = "") -> None:
        entry = {"at_ms": self._now_ms(), "phase": state.phase, "batch": state.batch_number, "verdict": verdict,
                 "channels": len(ids), "comparison": summary}
        if reason:
            entry["reason"] = reason
        state.history.append(entry)

    async def _conduit_ready(self, ids: list[str]) -> bool:
        """Return whether every channel in `ids` has all its conduit subscriptions enabled."""
        wanted = set(ids)
        if not wanted:
            return True
        channels = {c.broadcaster_user_id: c for c in await self.store.list() if c.broadcaster_user_id in wanted}
        defaults = self._settings.default_types
        have: dict[str, int] = {}
        async for _, raw in self._client.hscan_iter(self._keys.subscriptions, count=1000):
            sub = _subscription_decoder.decode(raw)
            broadcaster = sub.condition.get("broadcaster_user_id", "")
            if broadcaster in wanted and sub.status == "enabled":
                have[broadcaster] = have.get(broadcaster, 0) + 1
        return all(have.get(b, 0) >= subscription_count(c, defaults) for b, c in channels.items())

    # -- identity marks -----------------------------------------------------------------------------

    async def _prune_identity(self) -> None:
        now_s = time.monotonic()
        if now_s - self._pruned_at_s < self._settings.scaled(10):
            return
        self._pruned_at_s = now_s
        now_ms = self._now_ms()
        raw = await self._client.hgetall(self._keys.identity_dedup)
        expired = [b for b, until in raw.items() if 0 < int(until) < now_ms]
        if expired:
            await self._client.hdel(self._keys.identity_dedup, *expired)

    # -- automatic fallback ---------------------------------------------------------------------------

    async def _probe(self) -> bool | None:
        """Call Get Conduits now and then; return whether it worked (None: not probed this tick)."""
        now_s = time.monotonic()
        if now_s - self._probed_at_s < self._settings.scaled(10):
            return None
        self._probed_at_s = now_s
        try:
            await self._helix.get_conduits()
            return True
        except (FleetError, OSError, asyncio.TimeoutError) as exc:
            log.warning("Conduits API probe failed: %s", exc)
            return False

    async def _fallback(self, state: MigrationState) -> None:
        settings = self._settings
        if settings.fallback_after_s <= 0:
            return
        fallback = state.fallback
        working = await self._probe()
        now_ms = self._now_ms()
        if working is True:
            fallback["down_since_ms"] = 0
            fallback["up_since_ms"] = fallback.get("up_since_ms") or now_ms
        elif working is False:
            fallback["up_since_ms"] = 0
            fallback["down_since_ms"] = fallback.get("down_since_ms") or now_ms
        phase = fallback.get("state", "idle")
        down_since = fallback.get("down_since_ms", 0)
        up_since = fallback.get("up_since_ms", 0)
        if phase == "idle" and down_since and now_ms - down_since >= settings.scaled(settings.fallback_after_s) * 1000:
            await self._fall_back(state, now_ms)
        elif phase == "active" and up_since and now_ms - up_since >= settings.scaled(settings.fallback_recover_s) * 1000:
            ids = [c.broadcaster_user_id for c in await self.store.list() if c.fallback]
            await self.store.set_mode(ids, "both", fallback=False)
            fallback["state"] = "returning"
            fallback["returning"] = ids
            log.warning("the Conduits API works again; %d fallen-back channels run on both transports until their "
                        "conduit subscriptions exist", len(ids))
        elif phase == "returning" and await self._conduit_ready(fallback.get("returning", [])):
            channels = {c.broadcaster_user_id: c for c in await self.store.list()}
            ids = [b for b in fallback.get("returning", []) if b in channels and channels[b].transport_mode == "both"]
            await self.store.set_mode(ids, "conduit")
            fallback.update({"state": "idle", "returning": [], "returned_at_ms": now_ms})
            await self._alerts.resolve("conduit_fallback", f"{len(ids)} channels are back on the conduit",
                                       message_ja=f"{len(ids)} チャンネルが Conduit に戻りました")

    async def _fall_back(self, state: MigrationState, now_ms: int) -> None:
        settings = self._settings
        channels = [c for c in await self.store.list() if c.transport_mode == "conduit" and not c.fallback]
        order = {broadcaster: index for index, broadcaster in enumerate(settings.fallback_order)}
        channels.sort(key=lambda c: (order.get(c.broadcaster_user_id, len(order)), int(c.broadcaster_user_id)))
        room = settings.legacy_capacity - sum((await self.slots.load()).values())
        defaults = settings.default_types
        chosen: list[Channel] = []
        for channel in channels:
            need = subscription_count(channel, defaults)
            if need <= room:
                chosen.append(channel)
                room -= need
        ids = [c.broadcaster_user_id for c in chosen]
        if ids:
            await self.store.set_mode(ids, "websocket", fallback=True)
        state.fallback.update({"state": "active", "since_ms": now_ms, "channels": len(ids),
                               "left_on_conduit": len(channels) - len(ids)})
        if state.status == "running":
            pause(state, "paused: the Conduits API failed and channels fell back to the legacy connections",
                  "一時停止: Conduits API が失敗したため、チャンネルをレガシー接続へ移しました")
        minutes = settings.fallback_after_s / 60
        await self._alerts.fire(
            "conduit_fallback", "critical",
            f"the Conduits API has failed for {minutes:g} minutes; {len(ids)} channels moved to the legacy "
            f"WebSocket connections ({len(channels) - len(ids)} did not fit and stay on the conduit)",
            message_ja=f"Conduits API が {minutes:g} 分間失敗し続けたため、{len(ids)} チャンネルをレガシー WebSocket "
                       f"接続へ移しました（{len(channels) - len(ids)} チャンネルは収まらず Conduit のままです）")


class MigrationRefused(FleetError):
    """A command that does not apply in the current state."""
