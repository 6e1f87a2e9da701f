"""The chaos harness: one fleet of real processes driven through faults, with figures per fault.

For every fault it records what the emulator sent, what reached the streams, duplicates in the
streams, what Twitch (the emulator) dropped because two shards were down, and what we lost. An event
the emulator wrote to a socket of a process that was then SIGKILLed is counted apart, as "in flight
at crash": it was inside the dead process, where no client can save it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import signal
import time

from tests.fleet import PARTITIONS, Fleet


@dataclasses.dataclass
class FaultResult:
    name: str
    sent: int = 0
    published: int = 0
    duplicated: int = 0
    dropped_by_twitch: int = 0
    lost_by_us: int = 0
    in_flight_at_crash: int = 0
    max_disabled: int = 0
    recovery_s: float = 0.0  # emulator seconds from the fault until every shard was enabled again

    def row(self) -> str:
        return (f"| {self.name} | {self.sent} | {self.published} | {self.duplicated} | {self.dropped_by_twitch} | "
                f"{self.lost_by_us} | {self.in_flight_at_crash} | {self.max_disabled} | {self.recovery_s:.1f} |")


TABLE_HEADER = (
    "| fault | events sent | published | duplicated in stream | dropped by Twitch | lost by us | "
    "in flight at crash | max shards disabled at once | time until all enabled (s) |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


class ShardSampler:
    """Polls the emulator's view of the conduit's shards and keeps the worst moment."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.max_disabled = 0
        self.last_disabled_at = 0.0
        self._task: asyncio.Task | None = None
        self._stopped = False

    async def _disabled_now(self) -> int:
        conduit_id = (await self.fleet.redis.hget(self.fleet.keys.conduit, "id") or b"").decode()
        state = await self.fleet.control("GET", "/state")
        for conduit in state["conduits"]:
            if conduit["id"] == conduit_id:
                return sum(1 for shard in conduit["shards"] if shard["status"] != "enabled")
        return self.fleet.shard_count

    async def _run(self) -> None:
        # A stop flag rather than cancel(): a cancellation that lands inside a Redis call can be
        # swallowed by the client, and the loop would then never end.
        while not self._stopped:
            try:
                disabled = await self._disabled_now()
            except Exception:  # Redis may be restarting: skip this sample
                disabled = -1
            if disabled > 0:
                self.max_disabled = max(self.max_disabled, disabled)
                self.last_disabled_at = time.monotonic()
            await asyncio.sleep(0.05)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="shard sampler")

    async def stop(self) -> None:
        self._stopped = True
        await asyncio.gather(self._task, return_exceptions=True)


class ChaosRun:
    """A fleet with a leader, a standby and several workers, and a steady event load per fault."""

    def __init__(self, fleet: Fleet, *, workers: int, channels: int, rate: float, events: int) -> None:
        self.fleet = fleet
        self.workers = workers
        self.channels = channels
        self.rate = rate
        self.events = events
        self.results: list[FaultResult] = []
        self._next_worker = 1
        self._next_coordinator = 1

    # -- fleet ---------------------------------------------------------------------------------

    def add_worker(self) -> str:
        name = f"worker-{self._next_worker}"
        self._next_worker += 1
        self.fleet.start_worker(name)
        return name

    def add_coordinator(self) -> str:
        name = f"coordinator-{self._next_coordinator}"
        self._next_coordinator += 1
        self.fleet.start_coordinator(name)
        return name

    def worker_names(self) -> list[str]:
        return [n for n, p in self.fleet.processes.items() if n.startswith("worker") and p.alive()]

    async def leader_name(self) -> str:
        owner = (await self.fleet.redis.get(self.fleet.keys.leader) or b"").decode()
        pid = int(owner.rsplit("-", 2)[-2]) if owner.count("-") >= 2 else 0
        for name, process in self.fleet.processes.items():
            if process.pid == pid:
                return name
        raise AssertionError(f"no process owns the lease {owner!r}")

    async def setup(self) -> None:
        await self.fleet.start_emulator()
        self.add_coordinator()
        self.add_coordinator()
        for _ in range(self.workers):
            self.add_worker()
        await self.fleet.add_channels(self.channels, ["stream.online:1"])
        await self.fleet.wait_ready(subscriptions=self.channels, timeout_s=180)

    async def sessions_of(self, workers: list[str]) -> set[str]:
        """Return the emulator session ids bound to shards that these workers own."""
        owned = {shard for shard, worker in (await self.fleet.assignment()).items() if worker in workers}
        sessions = await self.fleet.control("GET", "/sessions")
        return {s["id"] for s in sessions if owned & set(s["shard_ids"])}

    # -- one fault ----------------------------------------------------------------------------------

    async def run_fault(self, name: str, inject, *, settle=None) -> FaultResult:
        fleet = self.fleet
        counters = await fleet.control("GET", "/counters")
        start_sequence = (await fleet.control("POST", "/deliveries", {"since": 10**12}))["sequence"]
        stream_ends = {p: await self._last_id(p) for p in range(PARTITIONS)}
        sampler = ShardSampler(fleet)
        sampler.start()
        run = await fleet.control("POST", "/generate", {"rate": self.rate, "count": self.events})
        await asyncio.sleep(self.events / self.rate / 3)

        crashed_sessions: set[str] = set()
        injected_at = time.monotonic()
        await inject(crashed_sessions)
        if settle is not None:
            await settle()

        async def generator_done() -> bool:
            return (await fleet.control("GET", f"/generate/{run['id']}"))["done"]

        await fleet.wait_for(generator_done, self.events / self.rate + 120, f"the generator to finish ({name})")
        await fleet.wait_for(fleet.all_shards_enabled, 120, f"every shard enabled after {name}")
        await sampler.stop()
        recovered_at = max(sampler.last_disabled_at, injected_at)
        after = await fleet.control("GET", "/counters")
        result = FaultResult(
            name=name,
            sent=after["sent"] - counters["sent"],
            dropped_by_twitch=after["dropped_disabled"] - counters["dropped_disabled"],
            max_disabled=sampler.max_disabled,
            recovery_s=round((recovered_at - injected_at) / fleet.time_scale, 1) if sampler.max_disabled else 0.0,
        )
        await self._count_published(result, stream_ends, start_sequence, crashed_sessions)
        self.results.append(result)
        return result

    async def _last_id(self, partition: int) -> bytes:
        last = await self.fleet.redis.xrevrange(self.fleet.keys.events(partition), count=1)
        return last[0][0] if last else b"0-0"

    async def _new_entries(self, stream_ends: dict[int, bytes]) -> list[bytes]:
        ids = []
        for partition, last in stream_ends.items():
            for _, fields in await self.fleet.redis.xrange(self.fleet.keys.events(partition), min=f"({last.decode()}"):
                if fields.get(b"kind") == b"notification":
                    ids.append(fields[b"message_id"])
        return ids

    async def _count_published(self, result: FaultResult, stream_ends, start_sequence: int,
                               crashed_sessions: set[str]) -> None:
        expected = result.sent - result.dropped_by_twitch
        deadline = time.monotonic() + 30
        previous = -1
        while time.monotonic() < deadline:
            published_ids = await self._new_entries(stream_ends)
            if len(published_ids) >= expected or len(published_ids) == previous:
                break
            previous = len(published_ids)
            await asyncio.sleep(1.0)
        per_id = collections.Counter(published_ids)
        result.published = len(per_id)
        result.duplicated = sum(count - 1 for count in per_id.values())
        delivered = (await self.fleet.control("POST", "/deliveries", {"since": start_sequence}))["deliveries"]
        published = {message_id.decode() for message_id in per_id}
        for message_id, sessions in delivered.items():
            written = [s for s in sessions if not s.startswith("failed:")]
            if not written or message_id in published:
                continue
            if all(s in crashed_sessions for s in written):
                result.in_flight_at_crash += 1
            else:
                result.lost_by_us += 1
        # Events generated but neither written anywhere nor counted as dropped would be a bug in the
        # accounting itself; they show up as the difference below.
        unaccounted = expected - result.published - result.lost_by_us - result.in_flight_at_crash
        result.lost_by_us += max(0, unaccounted)


# -- the faults ---------------------------------------------------------------------------------


def faults(run: ChaosRun, restart_redis):
    """Return (name, inject, settle) for every fault, in the order they run."""
    fleet = run.fleet
    scaled = fleet.time_scale

    async def kill_worker(crashed: set[str]) -> None:
        victim = run.worker_names()[-1]
        crashed.update(await run.sessions_of([victim]))
        fleet.kill(victim)

    async def replace_worker() -> None:
        run.add_worker()

    async def terminate_worker(crashed: set[str]) -> None:
        await _terminate(fleet, run.worker_names()[:1])

    async def scale_up_then_down(crashed: set[str]) -> None:
        for _ in range(5 - len(run.worker_names())):
            run.add_worker()
        await fleet.wait_for(fleet.settled, 60, "the fleet balanced over 5 workers")
        await _terminate(fleet, run.worker_names()[:3])

    async def back_to_three() -> None:
        run.add_worker()

    async def kill_leader(crashed: set[str]) -> None:
        fleet.kill(await run.leader_name())

    async def replace_standby() -> None:
        run.add_coordinator()

    async def redis_restart(crashed: set[str]) -> None:
        await restart_redis()

    async def reconnect_all(crashed: set[str]) -> None:
        await fleet.control("POST", "/sessions/reconnect", {"all": True})

    async def drop_tenth(crashed: set[str]) -> None:
        sessions = [s["id"] for s in await fleet.control("GET", "/sessions")]
        await fleet.control("POST", "/sessions/drop", {"session_ids": sessions[: max(1, len(sessions) // 10)],
                                                       "mode": "abrupt"})

    async def helix_5xx(crashed: set[str]) -> None:
        await fleet.control("POST", "/faults", {"method": "*", "path": "*", "status": 503, "count": 10**9})
        await asyncio.sleep(30 * scaled)
        await fleet.control("DELETE", "/faults")

    async def invalidate_token(crashed: set[str]) -> None:
        await fleet.control("POST", "/tokens/invalidate")
        # Force Helix traffic: a dropped session must be bound with a fresh token.
        sessions = [s["id"] for s in await fleet.control("GET", "/sessions")]
        await fleet.control("POST", "/sessions/drop", {"session_ids": sessions[:1], "mode": "abrupt"})

    async def delete_conduit(crashed: set[str]) -> None:
        conduit_id = (await fleet.redis.hget(fleet.keys.conduit, "id")).decode()
        await fleet.control("POST", f"/conduits/{conduit_id}/delete")

    async def conduit_replaced() -> None:
        await fleet.wait_ready(subscriptions=run.channels, timeout_s=120)

    return [
        ("SIGKILL of a worker", kill_worker, replace_worker),
        ("SIGTERM of a worker", terminate_worker, replace_worker),
        ("scale 3 → 5 → 2 workers", scale_up_then_down, back_to_three),
        ("SIGKILL of the leader", kill_leader, replace_standby),
        ("Redis restart", redis_restart, None),
        ("session_reconnect to every session", reconnect_all, None),
        ("10 % of sockets dropped at once", drop_tenth, None),
        ("5xx on every Helix call for 30 s", helix_5xx, None),
        ("app token invalidated", invalidate_token, None),
        ("conduit deleted", delete_conduit, conduit_replaced),
    ]


async def _terminate(fleet: Fleet, names: list[str]) -> None:
    """SIGTERM workers (a rolling update or a scale-down) and wait until each has drained and exited."""
    processes = [fleet.processes.pop(name) for name in names]
    for process in processes:
        process.signal(signal.SIGTERM)
    deadline = time.monotonic() + 120
    for process in processes:
        while process.alive():
            assert time.monotonic() < deadline, f"{process.name} did not exit after SIGTERM"
            await asyncio.sleep(0.05)
        assert process.process.returncode == 0, f"{process.name} exited with {process.process.returncode}"
