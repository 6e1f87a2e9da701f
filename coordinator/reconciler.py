"""The subscription reconciler: desired channels × event types → conduit subscriptions.

It reads every subscription from Twitch, then creates the missing ones, deletes duplicates and
orphans on our conduit, and leaves revoked ones alone (they need a human). 409 counts as "exists".
Creation paces itself from the `Ratelimit-*` headers, because the whole fleet shares one bucket
(Twitch API guide). A failure never removes an entry from the desired state.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from common.errors import FleetError, HelixError, LimitReached
from common.helix import HelixClient
from common.keys import Keys
from common.models import NEEDS_HUMAN_STATUSES, Channel, Subscription
from common.settings import Settings
from .conduit import ConduitManager

log = logging.getLogger(__name__)

_channel_decoder = msgspec.json.Decoder(Channel)

SHARD_DISABLED_TYPE = "conduit.shard.disabled"

# The condition fields each type needs besides broadcaster_user_id (EventSub subscription types page).
_EXTRA_CONDITION = {
    "channel.follow": "moderator_user_id",
    "channel.chat.message": "user_id",
    "channel.chat.notification": "user_id",
}


def condition_for(type_: str, broadcaster_id: str) -> dict[str, str]:
    """Return the condition of a subscription of `type_` for one broadcaster."""
    condition = {"broadcaster_user_id": broadcaster_id}
    extra = _EXTRA_CONDITION.get(type_)
    if extra:
        condition[extra] = broadcaster_id
    return condition


def identity(type_: str, version: str, condition: dict[str, str]) -> str:
    """Return the key under which Twitch considers two subscriptions the same."""
    return f"{type_}|{version}|{orjson.dumps(condition, option=orjson.OPT_SORT_KEYS).decode()}"


class ReconcileReport(msgspec.Struct):
    desired: int = 0
    existing: int = 0
    created: int = 0
    deleted: int = 0
    failed: int = 0
    needs_human: int = 0
    total_cost: int = 0
    max_total_cost: int = 0
    finished_at_ms: int = 0


class Reconciler:
    """Brings the conduit's subscriptions in line with `cf:channels`."""

    def __init__(self, settings: Settings, client: redis.Redis, helix: HelixClient, conduit: ConduitManager) -> None:
        self._settings = settings
        self._client = client
        self._helix = helix
        self._conduit = conduit
        self._keys = Keys(settings.key_prefix)
        self.wake = asyncio.Event()
        self.last_report = ReconcileReport()
        self.failures: dict[str, str] = {}

    async def run(self) -> None:
        interval_s = self._settings.scaled(self._settings.reconcile_interval_s)
        while True:
            try:
                self.last_report = await self.reconcile_once()
            except (FleetError, RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("reconciliation failed: %s; retrying later", exc)
            try:
                await asyncio.wait_for(self.wake.wait(), interval_s)
                await asyncio.sleep(1.0)  # debounce bursts of channel edits
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def desired(self) -> dict[str, tuple[str, str, dict[str, str]]]:
        defaults = [f"{name}:{version}" for name, version in self._settings.event_types]
        wanted: dict[str, tuple[str, str, dict[str, str]]] = {}
        if self._settings.client_id and self._conduit.conduit_id:
            # Twitch recommends this event for conduit health (Handling conduit events); it comes
            # through our own shards, and the workers pass it to the leader's shard health loop.
            condition = {"client_id": self._settings.client_id, "conduit_id": self._conduit.conduit_id}
            wanted[identity(SHARD_DISABLED_TYPE, "1", condition)] = (SHARD_DISABLED_TYPE, "1", condition)
        for raw in (await self._client.hgetall(self._keys.channels)).values():
            channel = _channel_decoder.decode(raw)
            if channel.transport_mode == "websocket":
                continue
            for entry in channel.types or defaults:
                type_, _, version = entry.partition(":")
                condition = condition_for(type_, channel.broadcaster_user_id)
                wanted[identity(type_, version or "1", condition)] = (type_, version or "1", condition)
        return wanted

    async def reconcile_once(self) -> ReconcileReport:
        conduit_id = self._conduit.conduit_id
        wanted = await self.desired()
        existing, page = await self._helix.get_subscriptions()
        if any(sub.status == "conduit_deleted" and sub.transport is not None and sub.transport.conduit_id == conduit_id
               for sub in existing):
            # Twitch deleted our conduit (by hand, or after 72 h with every shard disabled).
            await self._conduit.replace_lost(conduit_id)
            conduit_id = self._conduit.conduit_id
        report = ReconcileReport(desired=len(wanted), max_total_cost=page.max_total_cost)
        seen: dict[str, Subscription] = {}
        to_delete: list[Subscription] = []
        for sub in existing:
            on_ours = sub.transport is not None and sub.transport.conduit_id == conduit_id
            key = identity(sub.type, sub.version, sub.condition)
            if sub.status in NEEDS_HUMAN_STATUSES:
                report.needs_human += 1
                seen.setdefault(key, sub)
                continue
            if not on_ours:
                if sub.transport is not None and sub.transport.method == "conduit" and sub.status != "enabled":
                    to_delete.append(sub)  # left behind by a lost conduit; re-created on ours below
                continue
            if key in seen or key not in wanted:
                to_delete.append(sub)
                continue
            seen[key] = sub
        missing = [value for key, value in wanted.items() if key not in seen]
        report.existing = len(seen)
        report.deleted = await self._delete(to_delete)
        created = await self._create(missing, conduit_id, report)
        seen.update((identity(sub.type, sub.version, sub.condition), sub) for sub in created)
        await self._store(seen)
        report.total_cost = self._helix.last_total_cost or page.total_cost
        report.finished_at_ms = int(time.time() * 1000)
        if report.created or report.deleted or report.failed:
            log.info("reconciled: %d desired, %d existed, %d created, %d deleted, %d failed, %d need re-consent",
                     report.desired, report.existing, report.created, report.deleted, report.failed, report.needs_human)
        return report

    async def _delete(self, subs: list[Subscription]) -> int:
        deleted = 0
        for sub in subs:
            try:
                if await self._helix.delete_subscription(sub.id):
                    deleted += 1
            except HelixError as exc:
                log.warning("deleting subscription %s failed: %s", sub.id, exc)
        return deleted

    async def _create(self, missing: list[tuple[str, str, dict[str, str]]], conduit_id: str,
                      report: ReconcileReport) -> list[Subscription]:
        created: list[Subscription] = []
        queue: asyncio.Queue = asyncio.Queue()
        for item in missing:
            queue.put_nowait(item)

        async def create_next() -> None:
            while not queue.empty():
                type_, version, condition = queue.get_nowait()
                await self._pace()
                try:
                    sub = await self._helix.create_subscription(type_, version, condition, conduit_id)
                    report.created += 1
                    if sub is not None:
                        created.append(sub)
                    self.failures.pop(identity(type_, version, condition), None)
                except LimitReached as exc:
                    report.failed += 1
                    self.failures[identity(type_, version, condition)] = f"limit: {exc.message}"
                    log.error("creating %s for %s hit a limit, not retrying: %s", type_, condition, exc.message)
                except HelixError as exc:
                    report.failed += 1
                    self.failures[identity(type_, version, condition)] = exc.message
                    log.warning("creating %s for %s failed: %s", type_, condition, exc)

        workers = [asyncio.create_task(create_next(), name=f"reconcile create {i}")
                   for i in range(self._settings.reconcile_concurrency)]
        await asyncio.gather(*workers)
        return created

    async def _pace(self) -> None:
        # Leave room for the calls already in flight instead of running the bucket dry.
        state = self._helix.ratelimit
        if 0 <= state.remaining <= self._settings.reconcile_concurrency:
            wait_s = state.reset_at_s - time.time()
            refill_per_s = state.limit / 60 if state.limit else 0
            if refill_per_s:
                wait_s = min(wait_s, (self._settings.reconcile_concurrency + 1 - state.remaining) / refill_per_s)
            if wait_s > 0:
                await asyncio.sleep(min(wait_s, 60.0))

    async def _store(self, subs: dict[str, Subscription]) -> None:
        encoder = msgspec.json.Encoder()
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(self._keys.subscriptions)
        if subs:
            pipe.hset(self._keys.subscriptions, mapping={sub.id: encoder.encode(sub) for sub in subs.values()})
        await pipe.execute()
