"""Event throughput, publish latency and worker scaling, all on one emulator and one Redis.

Every receiver holds 100 shards of its own conduit, with channel.chat.message subscriptions for its
own broadcasters, so the generator's `channel_weights` aims each trial at one receiver while the
others idle. Trials of the receivers alternate within each round, so they share the machine's load.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .counter import CounterReader
from .stack import CHAT_TYPE, REPO_ROOT, Stack, bench_env, cpu_seconds

SHARDS = 100
CHANNELS_PER_RECEIVER = 500
STREAM_MAXLEN = 100_000
GENERATOR_RATE = 1_000_000  # events/s asked of the generator: as fast as it can
FIRST_BROADCASTER = {"fleet": 100_000, "bare": 200_000, "tio_empty": 300_000, "tio_redis": 400_000}


@dataclass
class Receiver:
    name: str
    pids: list[int]
    broadcasters: list[str]
    counter: CounterReader | None = None  # None: count published stream entries (the fleet)
    trials: list[dict] = field(default_factory=list)


def broadcaster_ids(name: str) -> list[str]:
    first = FIRST_BROADCASTER[name]
    return [str(first + i) for i in range(CHANNELS_PER_RECEIVER)]


class ThroughputBench:
    def __init__(self, stack: Stack, chat_text_bytes: int, trial_s: float) -> None:
        self.stack = stack
        self.chat_text_bytes = chat_text_bytes
        self.trial_s = trial_s
        self.receivers: dict[str, Receiver] = {}
        self.workers: list[str] = []

    # -- setup ---------------------------------------------------------------------------------------

    async def start_fleet(self) -> None:
        stack = self.stack
        stack.start_coordinator(CF_SHARD_COUNT=str(SHARDS), CF_STREAM_MAXLEN=str(STREAM_MAXLEN),
                                CF_RECONCILE_INTERVAL_S="3600")
        await self.add_worker()
        broadcasters = broadcaster_ids("fleet")
        await stack.add_channels(broadcasters, [f"{CHAT_TYPE}:1"])
        await self.wait_fleet_ready(len(broadcasters))
        self.receivers["fleet"] = Receiver("fleet", [stack.pid(w) for w in self.workers], broadcasters)

    async def add_worker(self) -> None:
        name = f"worker-{len(self.workers) + 1}"
        self.stack.start_worker(name, CF_STREAM_MAXLEN=str(STREAM_MAXLEN))
        self.workers.append(name)

    async def wait_fleet_ready(self, subscriptions: int) -> None:
        stack = self.stack
        conduit_id = await stack.wait_fleet_settled(self.workers, SHARDS, timeout_s=90)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # The fleet starts first, so every enabled subscription is its own.
            page = await stack.helix("GET", "/eventsub/subscriptions", type=CHAT_TYPE)
            if page.get("total", 0) >= subscriptions:
                break
            await asyncio.sleep(0.2)
        self.fleet_conduit = conduit_id

    async def scale_fleet(self, workers: int) -> None:
        while len(self.workers) < workers:
            await self.add_worker()
        await self.stack.wait_fleet_settled(self.workers, SHARDS, timeout_s=120)
        self.receivers["fleet"].pids = [self.stack.pid(w) for w in self.workers]

    async def start_bare(self, log_dir: Path) -> None:
        stack = self.stack
        conduit_id = await stack.create_conduit(SHARDS)
        broadcasters = broadcaster_ids("bare")
        await stack.subscribe_chat(conduit_id, broadcasters)
        counter = CounterReader(log_dir / "bare.counter")
        stack.spawn("bare", [sys.executable, "-m", "bench.bare", "--emulator", stack.emulator_url,
                             "--conduit-id", conduit_id, "--shards", str(SHARDS), "--counter", str(counter.path)],
                    bench_env(stack.fleet_env()))
        await stack.wait_enabled(conduit_id, SHARDS, 60, "the bare client's shards")
        self.receivers["bare"] = Receiver("bare", [stack.pid("bare")], broadcasters, counter)

    async def start_twitchio(self, mode: str, log_dir: Path) -> None:
        stack = self.stack
        name = f"tio_{mode}"
        conduit_id = await stack.create_conduit(SHARDS)
        broadcasters = broadcaster_ids(name)
        await stack.subscribe_chat(conduit_id, broadcasters)
        counter = CounterReader(log_dir / f"{name}.counter")
        argv = [sys.executable, "-m", "bench.tio", "--emulator", stack.emulator_url, "--conduit-id", conduit_id,
                "--shards", str(SHARDS), "--mode", mode, "--counter", str(counter.path),
                "--redis-port", str(stack.redis_port)]
        stack.spawn(name, argv, bench_env(stack.fleet_env()), cwd=log_dir)
        await stack.wait_enabled(conduit_id, SHARDS, 90, f"TwitchIO ({mode}) shards")
        self.receivers[name] = Receiver(name, [stack.pid(name)], broadcasters, counter)

    # -- trials --------------------------------------------------------------------------------------

    async def _received(self, receiver: Receiver) -> int:
        if receiver.counter is None:
            return await self.stack.stream_published()
        return receiver.counter.read()[0]

    async def generate(self, receiver: Receiver, count: int, rate: float = GENERATOR_RATE) -> None:
        await self.stack.control("POST", "/generate", {
            "rate": rate, "count": count, "types": [CHAT_TYPE], "chat_text_bytes": self.chat_text_bytes,
            "channel_weights": {b: 1 for b in receiver.broadcasters},
        })

    async def trial(self, receiver: Receiver, count: int, timeout_s: float = 180) -> dict:
        """Send `count` events to one receiver as fast as the generator can; return its rate and CPU."""
        stack = self.stack
        await asyncio.sleep(1.0)  # an idle gap, so the counter starts a new burst
        base = await self._received(receiver)
        cpu_before = {pid: cpu_seconds(pid) for pid in receiver.pids}
        emulator_before, redis_before = cpu_seconds(stack.pid("emulator")), cpu_seconds(stack.pid("redis"))
        started_ms = time.time() * 1000
        await self.generate(receiver, count)
        deadline = time.monotonic() + timeout_s
        while await self._received(receiver) < base + count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{receiver.name}: only {await self._received(receiver) - base} of {count} "
                                   f"events arrived within {timeout_s:.0f} s; logs in {stack.log_dir}")
            stack.check_alive()
            await asyncio.sleep(0.02)
        cpu = sum(cpu_seconds(pid) - before for pid, before in cpu_before.items())
        emulator_cpu = cpu_seconds(stack.pid("emulator")) - emulator_before
        redis_cpu = cpu_seconds(stack.pid("redis")) - redis_before
        # From the generate request to the last event handled (the last stream entry for the fleet).
        if receiver.counter is None:
            last_s = await self._last_entry_s()
        else:
            last_s = receiver.counter.read()[2]
        elapsed = max(last_s - started_ms / 1000, 1e-3)
        return {"events": count, "elapsed_s": elapsed, "events_per_s": count / elapsed,
                "cpu_s": cpu, "cpu_s_per_million": cpu / count * 1e6,
                "emulator_cpu_s_per_million": emulator_cpu / count * 1e6,
                "redis_cpu_s_per_million": redis_cpu / count * 1e6}

    async def _last_entry_s(self) -> float:
        """Return the time of the newest stream entry, from the millisecond part of its id."""
        newest = 0.0
        for partition in range(4):
            tail = await self.stack.redis.xrevrange(self.stack.keys.events(partition), count=1)
            if tail:
                newest = max(newest, int(tail[0][0].split(b"-")[0]) / 1000)
        return newest

    async def calibrate(self, receiver: Receiver) -> int:
        """Warm a receiver up and return the event count of a trial of about `trial_s` seconds."""
        warmup = await self.trial(receiver, 3000)
        return max(3000, int(warmup["events_per_s"] * self.trial_s / 1000) * 1000)

    def redis_ceiling(self, count: int) -> dict:
        argv = [sys.executable, "-m", "bench.redis_ceiling", "--port", str(self.stack.redis_port),
                "--count", str(count), "--event-bytes", str(self.event_bytes), "--maxlen", str(STREAM_MAXLEN)]
        redis_before = cpu_seconds(self.stack.pid("redis"))
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        redis_cpu = cpu_seconds(self.stack.pid("redis")) - redis_before
        return {"events": count, "elapsed_s": result["elapsed_s"], "events_per_s": count / result["elapsed_s"],
                "cpu_s": result["cpu_s"], "cpu_s_per_million": result["cpu_s"] / count * 1e6,
                "emulator_cpu_s_per_million": 0.0, "redis_cpu_s_per_million": redis_cpu / count * 1e6}

    async def measure_sizes(self) -> dict:
        """Return the byte sizes of one published chat event and of its notification frame."""
        await self.trial(self.receivers["fleet"], 10)
        entries = await self.stack.redis.xrevrange(self.stack.keys.events(0), count=1)
        if not entries:
            entries = await self.stack.redis.xrevrange(self.stack.keys.events(1), count=1)
        self.event_bytes = len(entries[0][1][b"event"])
        return {"event_bytes": self.event_bytes}

    async def run_rounds(self, names: list[str], rounds: int, with_ceiling: bool) -> dict[str, list[dict]]:
        counts = {name: await self.calibrate(self.receivers[name]) for name in names}
        ceiling_count = max(counts.values()) * 2
        results: dict[str, list[dict]] = {name: [] for name in names}
        if with_ceiling:
            results["redis_ceiling"] = []
            self.redis_ceiling(5000)
        for _ in range(rounds):
            for name in names:
                results[name].append(await self.trial(self.receivers[name], counts[name]))
            if with_ceiling:
                results["redis_ceiling"].append(await asyncio.to_thread(self.redis_ceiling, ceiling_count))
        return results

    # -- publish latency -----------------------------------------------------------------------------

    async def latency_trial(self, rate: float, duration_s: float) -> dict:
        """Generate at `rate` for `duration_s` to the fleet; return latency percentiles of the entries."""
        stack = self.stack
        receiver = self.receivers["fleet"]
        await asyncio.sleep(1.0)
        base = await stack.stream_published()
        count = int(rate * duration_s)
        started_ms = int(time.time() * 1000)
        await self.generate(receiver, count, rate)
        deadline = time.monotonic() + duration_s + 120
        while await stack.stream_published() < base + count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"latency run at {rate}/s did not finish; logs in {stack.log_dir}")
            await asyncio.sleep(0.05)
        send_to_receive, receive_to_stream, send_to_stream, firsts, lasts = [], [], [], [], []
        for partition in range(4):
            entries = await stack.redis.xrange(stack.keys.events(partition), min=f"{started_ms}-0")
            for entry_id, fields in entries:
                stream_ms = int(entry_id.split(b"-")[0])
                received_ms = int(fields[b"received_at_ms"])
                sent_ms = rfc3339_ms(fields[b"message_timestamp"].decode())
                send_to_receive.append(received_ms - sent_ms)
                receive_to_stream.append(stream_ms - received_ms)
                send_to_stream.append(stream_ms - sent_ms)
                firsts.append(sent_ms)
                lasts.append(stream_ms)
        span_s = max((max(lasts) - min(firsts)) / 1000, 1e-3)
        return {"rate": rate, "events": len(send_to_stream), "achieved_per_s": len(send_to_stream) / span_s,
                "send_to_stream_ms": percentiles(send_to_stream),
                "send_to_receive_ms": percentiles(send_to_receive),
                "receive_to_stream_ms": percentiles(receive_to_stream)}


def rfc3339_ms(text: str) -> float:
    """Return the Unix time in ms of an RFC 3339 UTC timestamp with up to 9 fractional digits."""
    seconds, _, fraction = text.rstrip("Z").partition(".")
    whole = calendar.timegm(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S"))
    return whole * 1000 + float(f"0.{fraction or 0}") * 1000


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": ordered[len(ordered) // 2], "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "max": ordered[-1]}


def median_of(trials: list[dict], key: str) -> float:
    return statistics.median(trial[key] for trial in trials)
