"""The subscription reconciler: desired channels × event types → conduit subscriptions.

Each pass reads every subscription from Twitch (all pages), adopts the ones already on our conduit,
deletes duplicates, orphans and dead ones, and creates what is missing with bounded concurrency at
the pace of the fleet's shared rate budget (`common.ratelimit`). 409 counts as "exists". A failure
never removes an entry from the desired state: it gets a state with its reason in
`cf:subscription-states`. Revoked subscriptions (`authorization_revoked`, `user_removed`,
`moderator_removed`, `chat_user_banned`) and `version_removed` need a person, so they are not
created again until an operator runs `conduit-fleet channels clear ID`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import msgspec
import redis.asyncio as redis
from redis.exceptions import RedisError

from common.alerts import Alerts
from common.backoff import Backoff
from common.channels import (
    BLOCKED_BY_COST, FAILED, NEEDS_RECONSENT, VERSION_REMOVED, EntryState, EntryStateStore, entry_state,
)
from common.errors import (
    CircuitOpen, CostLimitReached, FleetError, HelixError, LimitReached, RateLimited, ServerError, Unauthorized,
)
from common.helix import HelixClient
from common.keys import Keys
from common.models import SHARD_STATUSES, Channel, Subscription
from common.settings import Settings
from common.subscriptions import Wanted, channel_subscriptions
from common.subscriptions import subscription_key as identity
from .conduit import ConduitManager
from .reconcile_progress import ReconcileProgress

log = logging.getLogger(__name__)

_channel_decoder = msgspec.json.Decoder(Channel)

SHARD_DISABLED_TYPE = "conduit.shard.disabled"
MAX_SHARDS = 20_000

# Subscription statuses that mean a user withdrew something; only they can give it back.
REVOKED_STATUSES = frozenset({"authorization_revoked", "user_removed", "moderator_removed", "chat_user_banned"})
# Statuses Twitch documents for subscriptions (Get EventSub Subscriptions), plus `conduit_deleted`,
# which clients have seen after Twitch deleted a conduit. Anything else is logged once per value.
KNOWN_STATUSES = SHARD_STATUSES | REVOKED_STATUSES | {
    "version_removed", "beta_maintenance", "websocket_connection_unused", "conduit_deleted",
}

# Types that need the broadcaster's (or a moderator's) authorization cost 0 (Managing subscriptions).
# NOTE: only these are created once max_total_cost is spent. Other types also cost 0 when the
# broadcaster authorized the app, but the reconciler cannot know that before creating them.
ZERO_COST_TYPES = frozenset({
    "channel.follow", "channel.subscribe", "channel.subscription.gift", "channel.subscription.message",
    "channel.chat.message", "channel.chat.notification", "channel.moderate", "channel.ban", "channel.unban",
    "channel.channel_points_custom_reward_redemption.add", SHARD_DISABLED_TYPE,
})

_unknown_statuses_logged: set[str] = set()


class ReconcileReport(msgspec.Struct):
    desired: int = 0
    existing: int = 0
    created: int = 0
    exists: int = 0
    deleted: int = 0
    failed: int = 0
    needs_human: int = 0
    blocked_by_cost: int = 0
    total_cost: int = 0
    max_total_cost: int = 0
    finished_at_ms: int = 0
    paused: str = ""


class PassPaused(FleetError):
    """Raised inside a pass when Helix keeps failing; the pass stops and runs again after a backoff."""


class Reconciler:
    """Brings the conduit's subscriptions in line with `cf:channels`."""

    def __init__(self, settings: Settings, client: redis.Redis, helix: HelixClient, conduit: ConduitManager,
                 alerts: Alerts | None = None) -> None:
        self._settings = settings
        self._client = client
        self._helix = helix
        self._conduit = conduit
        self._keys = Keys(settings.key_prefix)
        self._alerts = alerts or Alerts(client, self._keys)
        self._states = EntryStateStore(client, self._keys)
        self.progress = ReconcileProgress(client, self._keys)
        self.wake = asyncio.Event()
        self.last_report = ReconcileReport()
        self.runs = 0

    async def run(self) -> None:
        interval_s = self._settings.scaled(self._settings.reconcile_interval_s)
        backoff = Backoff(base_s=self._settings.scaled(5.0), cap_s=interval_s)
        while True:
            wait_s = interval_s
            try:
                self.last_report = await self.reconcile_once()
                if self.last_report.paused:
                    wait_s = backoff.next_delay()
                else:
                    backoff.reset()
            except (FleetError, RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("reconciliation failed: %s; retrying later", exc)
                wait_s = backoff.next_delay()
            try:
                await asyncio.wait_for(self.wake.wait(), wait_s)
                await asyncio.sleep(self._settings.scaled(1.0))  # debounce bursts of channel edits
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def desired(self) -> dict[str, Wanted]:
        defaults = self._settings.default_types
        wanted: dict[str, Wanted] = {}
        if self._settings.client_id and self._conduit.conduit_id:
            # Twitch recommends this event for conduit health (Handling conduit events); it comes
            # through our own shards, and the workers pass it to the leader's shard health loop.
            condition = {"client_id": self._settings.client_id, "conduit_id": self._conduit.conduit_id}
            wanted[identity(SHARD_DISABLED_TYPE, "1", condition)] = (SHARD_DISABLED_TYPE, "1", condition)
        for raw in (await self._client.hgetall(self._keys.channels)).values():
            channel = _channel_decoder.decode(raw)
            if channel.transport_mode == "websocket":
                continue
            wanted.update(channel_subscriptions(channel, defaults))
        return wanted

    async def reconcile_once(self) -> ReconcileReport:
        self.runs += 1
        progress = self.progress
        progress.begin(self.runs)
        await progress.flush()
        wanted = await self.desired()
        await self._grow_shards(len(wanted))
        existing, page = await self._helix.get_subscriptions()
        conduit_id = await self._check_conduit(existing)
        states = await self._states.load()
        plan = _Plan(wanted, states, conduit_id)
        for sub in existing:
            plan.classify(sub)
        report = ReconcileReport(desired=len(wanted), existing=len(plan.seen), needs_human=plan.needs_human,
                                 total_cost=page.total_cost, max_total_cost=page.max_total_cost)
        self.last_report = report
        for name, value in (("desired", len(wanted)), ("existing", len(plan.seen)), ("to_create", len(plan.missing)),
                            ("needs_reconsent", plan.needs_human), ("total_cost", page.total_cost),
                            ("max_total_cost", page.max_total_cost)):
            progress.counts[name] = value
        log.info("reconcile run %d: %d desired, %d on the conduit, %d to create, %d to delete, %d need a person",
                 self.runs, len(wanted), len(plan.seen), len(plan.missing), len(plan.to_delete), plan.needs_human)
        await self._alert_revocations(plan)

        progress.state = "deleting"
        await progress.flush()
        deleted = await self._delete(plan.to_delete)
        report.deleted = len(deleted)
        # Deleting enabled subscriptions gives their cost back before anything is created.
        report.total_cost = max(0, report.total_cost - sum(sub.cost for sub in deleted if sub.status == "enabled"))
        progress.counts["deleted"] = report.deleted

        progress.state = "creating"
        await progress.flush(force_log=bool(plan.missing))
        # Store what exists now, so stats and the API count it during a long creation pass; each
        # created subscription is added as it is confirmed.
        await self._store(plan.seen)
        pass_ = _CreationPass(self, plan, conduit_id, report)
        try:
            await pass_.run()
        finally:
            await self._states.save(plan.changed_states, plan.cleared_states)
            await self._store(plan.seen)
        final_states = plan.final_states().values()
        report.needs_human = sum(1 for state in final_states if state.state in (NEEDS_RECONSENT, VERSION_REMOVED))
        report.max_total_cost = page.max_total_cost or self._helix.max_total_cost
        report.finished_at_ms = int(time.time() * 1000)
        await self._alert_outcome(pass_, report)

        progress.state = "paused" if report.paused else "done"
        progress.error = report.paused
        progress.finished_at_ms = report.finished_at_ms
        progress.counts.update(total_cost=report.total_cost, max_total_cost=report.max_total_cost,
                               needs_reconsent=report.needs_human)
        await progress.flush(force_log=True)
        return report

    async def _check_conduit(self, existing: list[Subscription]) -> str:
        conduit_id = self._conduit.conduit_id
        if any(sub.status == "conduit_deleted" and sub.transport is not None and sub.transport.conduit_id == conduit_id
               for sub in existing):
            # Twitch deleted our conduit (by hand, or after 72 h with every shard disabled).
            await self._conduit.replace_lost(conduit_id)
        return self._conduit.conduit_id

    async def _grow_shards(self, subscriptions: int) -> None:
        """Raise the conduit's desired shard count to one shard per CF_SUBSCRIPTIONS_PER_SHARD; never lower it."""
        per_shard = self._settings.subscriptions_per_shard
        if per_shard <= 0 or not self._conduit.conduit_id:
            return
        target = min(MAX_SHARDS, max(1, math.ceil(subscriptions / per_shard)))
        stored = await self._client.hget(self._keys.conduit, "desired_shard_count")
        current = max(int(stored) if stored else self._settings.shard_count, self._conduit.shard_count)
        if target <= current:
            return
        log.info("growing the conduit from %d to %d shards for %d desired subscriptions (%d per shard)",
                 current, target, subscriptions, per_shard)
        await self._client.hset(self._keys.conduit, "desired_shard_count", target)
        await self._client.publish(self._keys.resize_channel, str(target))

    async def _delete(self, subs: list[Subscription]) -> list[Subscription]:
        """Delete subscriptions on Twitch; return the ones that existed and are gone now."""
        deleted = []
        for sub in subs:
            try:
                if await self._helix.delete_subscription(sub.id):
                    deleted.append(sub)
            except HelixError as exc:
                log.warning("deleting subscription %s failed: %s", sub.id, exc)
        return deleted

    async def _alert_revocations(self, plan: _Plan) -> None:
        for state_name, severity in ((NEEDS_RECONSENT, "warning"), (VERSION_REMOVED, "critical")):
            new = [state for state in plan.changed_states.values() if state.state == state_name]
            if not new:
                continue
            sample = ", ".join(f"{state.type} {state.broadcaster_user_id or state.condition}" for state in new[:5])
            await self._alerts.event(
                f"subscription_{state_name}", severity,
                f"{len(new)} subscriptions need a person ({state_name}: {new[0].reason}); for example {sample}. "
                "They are not created again until `conduit-fleet channels clear ID`.", value=str(len(new)))

    async def _alert_outcome(self, pass_: _CreationPass, report: ReconcileReport) -> None:
        for name, failures in pass_.alert_failures.items():
            sample = "; ".join(failures[:3])
            await self._alerts.event(name, "warning", f"{len(failures)} subscriptions failed and are not retried: {sample}",
                                     value=str(len(failures)))
        if report.blocked_by_cost:
            await self._alerts.fire(
                "subscription_cost_limit", "critical",
                f"max_total_cost {report.max_total_cost} is spent ({report.total_cost}); {report.blocked_by_cost} "
                "subscriptions that may cost are not created", value=str(report.blocked_by_cost))
        else:
            await self._alerts.resolve("subscription_cost_limit", "no subscription is blocked by cost")

    async def _store(self, subs: dict[str, Subscription]) -> None:
        encoder = msgspec.json.Encoder()
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(self._keys.subscriptions)
        items = [(sub.id, encoder.encode(sub)) for sub in subs.values()]
        for start in range(0, len(items), 1000):
            pipe.hset(self._keys.subscriptions, mapping=dict(items[start:start + 1000]))
        await pipe.execute()


class _Plan:
    """The subscriptions one pass found on Twitch, and the deletions and entry states it must write."""

    def __init__(self, wanted: dict[str, Wanted], states: dict[str, EntryState], conduit_id: str) -> None:
        self.wanted = wanted
        self.states = states
        self.conduit_id = conduit_id
        self.seen: dict[str, Subscription] = {}
        self.to_delete: list[Subscription] = []
        self.changed_states: dict[str, EntryState] = {}
        self.cleared_states: set[str] = {key for key in states if key not in wanted}
        self.needs_human = 0

    def classify(self, sub: Subscription) -> None:
        key = identity(sub.type, sub.version, sub.condition)
        on_ours = sub.transport is not None and sub.transport.conduit_id == self.conduit_id
        if sub.status not in KNOWN_STATUSES and sub.status not in _unknown_statuses_logged:
            _unknown_statuses_logged.add(sub.status)
            log.warning("subscription %s has the unknown status %r; treating it as not enabled", sub.id, sub.status)
        if not on_ours:
            if sub.transport is not None and sub.transport.method == "conduit" and sub.status != "enabled":
                self.to_delete.append(sub)  # left behind by a lost conduit; re-created on ours
            return
        if sub.status in REVOKED_STATUSES or sub.status == "version_removed":
            self._needs_person(key, sub)
            return
        if sub.status != "enabled" or key in self.seen or key not in self.wanted:
            self.to_delete.append(sub)  # a duplicate, an orphan, or not enabled: re-created below if wanted
            return
        self.seen[key] = sub
        if key in self.states:
            self.cleared_states.add(key)

    def _needs_person(self, key: str, sub: Subscription) -> None:
        # The dead subscription is deleted; the entry state keeps it from being created again.
        self.to_delete.append(sub)
        if key not in self.wanted:
            return
        self.needs_human += 1
        known = self.states.get(key)
        if known is not None and known.subscription_id == sub.id:
            return
        name = NEEDS_RECONSENT if sub.status in REVOKED_STATUSES else VERSION_REMOVED
        reason = f"Twitch revoked subscription {sub.id}: {sub.status}"
        self.changed_states[key] = entry_state(name, reason, sub.type, sub.version, sub.condition,
                                               subscription_id=sub.id)

    @property
    def missing(self) -> list[tuple[str, Wanted]]:
        blocked = self.final_states()
        return [(key, value) for key, value in self.wanted.items()
                if key not in self.seen and not (key in blocked and blocked[key].blocks_retry)]

    def final_states(self) -> dict[str, EntryState]:
        states = {key: state for key, state in self.states.items() if key not in self.cleared_states}
        states.update(self.changed_states)
        return states

    def record(self, key: str, state: EntryState | None) -> None:
        """Set or clear the state of one entry after trying to create it."""
        if state is None:
            self.changed_states.pop(key, None)
            if key in self.states:
                self.cleared_states.add(key)
            return
        self.changed_states[key] = state
        self.cleared_states.discard(key)


class _CreationPass:
    """Creates the missing subscriptions of one pass with bounded concurrency."""

    def __init__(self, reconciler: Reconciler, plan: _Plan, conduit_id: str, report: ReconcileReport) -> None:
        self._reconciler = reconciler
        self._helix = reconciler._helix
        self._progress = reconciler.progress
        self._plan = plan
        self._conduit_id = conduit_id
        self._report = report
        self._cost_spent = bool(report.max_total_cost) and report.total_cost >= report.max_total_cost
        self.alert_failures: dict[str, list[str]] = {}

    async def run(self) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        for item in self._plan.missing:
            queue.put_nowait(item)
        concurrency = min(self._reconciler._settings.reconcile_concurrency, max(1, queue.qsize()))
        workers = [asyncio.create_task(self._work(queue), name=f"reconcile create {i}") for i in range(concurrency)]
        flusher = asyncio.create_task(self._flush_progress(), name="reconcile progress")
        try:
            await asyncio.gather(*workers)
        except PassPaused as exc:
            self._report.paused = str(exc)
            log.warning("reconcile run %d paused with %d entries left: %s", self._reconciler.runs,
                        self._progress.remaining, exc)
        finally:
            for task in (*workers, flusher):
                task.cancel()
            await asyncio.gather(*workers, flusher, return_exceptions=True)

    async def _flush_progress(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._progress.flush()

    async def _work(self, queue: asyncio.Queue) -> None:
        while not queue.empty():
            key, (type_, version, condition) = queue.get_nowait()
            if self._cost_spent and type_ not in ZERO_COST_TYPES:
                self._blocked_by_cost(key, type_, version, condition)
                continue
            await self._create(key, type_, version, condition)

    async def _create(self, key: str, type_: str, version: str, condition: dict[str, str]) -> None:
        plan, progress, report = self._plan, self._progress, self._report
        try:
            sub = await self._helix.create_subscription(type_, version, condition, self._conduit_id)
        except CostLimitReached:
            self._cost_spent = True
            self._blocked_by_cost(key, type_, version, condition)
            return
        except LimitReached as exc:
            self._failed(key, type_, version, condition, f"limit: {exc.message}", "subscription_limit")
            return
        except (CircuitOpen, ServerError, RateLimited, Unauthorized) as exc:
            # Helix as a whole is failing: record this entry as retryable and stop the pass.
            plan.record(key, entry_state(FAILED, f"{exc.status}: {exc.message}", type_, version, condition,
                                         retryable=True))
            raise PassPaused(f"creating {type_} failed: {exc}") from exc
        except HelixError as exc:
            self._failed(key, type_, version, condition, f"{exc.status}: {exc.message}", "subscription_rejected")
            return
        if sub is None:
            progress.add("exists")
            report.exists += 1
        else:
            plan.seen[key] = sub
            await self._record_created(sub)
            progress.add("created")
            report.created += 1
            # Responses arrive out of order, but total cost only grows while a pass creates.
            report.total_cost = max(report.total_cost, self._helix.last_total_cost)
            progress.counts["total_cost"] = report.total_cost
            if self._helix.max_total_cost and self._helix.last_total_cost >= self._helix.max_total_cost:
                self._cost_spent = True
        plan.record(key, None)

    async def _record_created(self, sub: Subscription) -> None:
        try:
            await self._reconciler._client.hset(self._reconciler._keys.subscriptions, sub.id, msgspec.json.encode(sub))
        except (RedisError, OSError) as exc:
            log.warning("could not record subscription %s: %s", sub.id, exc)

    def _failed(self, key: str, type_: str, version: str, condition: dict[str, str], reason: str, alert: str) -> None:
        log.warning("creating %s v%s for %s failed, not retrying: %s", type_, version, condition, reason)
        self._plan.record(key, entry_state(FAILED, reason, type_, version, condition))
        self._progress.add("failed")
        self._report.failed += 1
        self.alert_failures.setdefault(alert, []).append(f"{type_} {condition}: {reason}")

    def _blocked_by_cost(self, key: str, type_: str, version: str, condition: dict[str, str]) -> None:
        reason = f"max_total_cost {self._helix.max_total_cost or self._report.max_total_cost} is spent"
        self._plan.record(key, entry_state(BLOCKED_BY_COST, reason, type_, version, condition, retryable=True))
        self._progress.add("blocked_by_cost")
        self._report.blocked_by_cost += 1
