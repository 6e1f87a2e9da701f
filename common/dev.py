"""`conduit-fleet dev`: the whole fleet on one machine against the emulator.

Starts Redis, the emulator, one coordinator and N workers as separate processes, loads sample
channels, generates events, and on Ctrl-C or after --duration stops everything and prints what the
emulator sent against what reached the streams.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from .channels import ChannelStore, make_channel
from .keys import Keys
from .local import (
    LOOPBACK, ManagedProcess, emulator_env, fleet_env, free_port, python_module, start_redis, wait_for_port,
)
from .settings import DEFAULT_EVENT_TYPES, Settings

# The emulator user whose token runs the legacy WebSocket connections in a dev run.
LEGACY_USER_ID = "9999"
# Settings `dev` sets itself: where Redis, the emulator and the API are, and the time scale. Every
# other CF_* variable of the environment reaches the processes, for example CF_MIGRATION_SOAK_S.
DEV_OWNED_SETTINGS = frozenset({
    "CF_REDIS_URL", "CF_EVENTS_REDIS_URL", "CF_HELIX_URL", "CF_OAUTH_URL", "CF_EVENTSUB_WS_URL",
    "CF_HTTP_HOST", "CF_HTTP_PORT", "CF_TIME_SCALE", "CF_WORKER_ID", "CF_METRICS_PORT", "CF_SHARD_COUNT",
})


def passed_settings() -> dict[str, str]:
    """Return the CF_* variables of this environment that a dev run hands to its processes."""
    return {key: value for key, value in os.environ.items()
            if key.startswith("CF_") and key not in DEV_OWNED_SETTINGS}


def add_dev_parser(commands) -> None:
    dev = commands.add_parser(
        "dev", help="run Redis, the emulator, a coordinator and workers locally",
        description="Run Redis, the emulator, a coordinator and workers on 127.0.0.1. CF_* variables of the "
                    "environment reach the processes (for example CF_MIGRATION_SOAK_S or CF_API_TOKEN), except "
                    "the URLs, ports, time scale, worker ids and shard count, which dev sets itself.")
    dev.add_argument("--duration", type=float, default=0, help="seconds to run before stopping (default: until Ctrl-C)")
    dev.add_argument("--channels", type=int, default=1000, help="sample channels to load (default 1000)")
    dev.add_argument("--types", default=DEFAULT_EVENT_TYPES, help="event types per channel as type:version,...")
    dev.add_argument("--legacy-channels", type=int, default=0,
                     help="how many of the sample channels start on the legacy WebSocket mode (default 0, at most 900)")
    dev.add_argument("--workers", type=int, default=2, help="shard worker processes (default 2)")
    dev.add_argument("--shards", type=int, default=10, help="shard count of the new conduit (default 10)")
    dev.add_argument("--rate", type=float, default=300, help="events per second the emulator generates (default 300)")
    dev.add_argument("--duplicate-ratio", type=float, default=0.02, help="share of events delivered twice (default 0.02)")
    dev.add_argument("--http-port", type=int, default=8080, help="coordinator HTTP port (default 8080)")
    dev.add_argument("--log-dir", type=Path, default=None, help="where process logs go (default: a temp folder)")
    dev.set_defaults(handler=run_dev)


def run_dev(args) -> int:
    if args.duration < 0 or args.channels < 1 or args.workers < 1 or args.rate <= 0 or not 0 <= args.legacy_channels <= 900:
        raise ValueError("invalid dev options: --duration >= 0, --channels >= 1, --workers >= 1, --rate > 0 and "
                         "--legacy-channels from 0 to 900 are required")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="conduit-fleet-dev-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    fleet = DevFleet(args, log_dir)
    try:
        return asyncio.run(fleet.run())
    finally:
        fleet.stop_all()


class DevFleet:
    """The processes of one `dev` run and the summary of what they did."""

    def __init__(self, args, log_dir: Path) -> None:
        self.args = args
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []
        self.stop_requested = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_requested.set)
        started = time.monotonic()
        redis_process, redis_port = start_redis(self.log_dir)
        self.processes.append(redis_process)
        emulator_port = free_port()
        self.emulator_url = f"http://{LOOPBACK}:{emulator_port}"
        self._spawn("emulator", python_module("common.cli", "emulator"), emulator_env(port=emulator_port))
        wait_for_port(emulator_port)
        user_token = await self._legacy_user()
        env = fleet_env(redis_port=redis_port, emulator_port=emulator_port, http_port=self.args.http_port,
                        extra={"CF_RECONCILE_INTERVAL_S": "30", "CF_DRAIN_TIMEOUT_S": "5", **passed_settings(),
                               "CF_SHARD_COUNT": str(self.args.shards), **user_token})
        self._spawn("coordinator", python_module("common.cli", "coordinator"), env)
        for index in range(self.args.workers):
            self._spawn(f"worker-{index + 1}", python_module("common.cli", "worker"),
                        {**env, "CF_WORKER_ID": f"worker-{index + 1}", "CF_METRICS_PORT": "0"})
        print(f"redis 127.0.0.1:{redis_port}, emulator {self.emulator_url}, "
              f"API http://127.0.0.1:{self.args.http_port}/api/stats, logs in {self.log_dir}", flush=True)
        print(f"for the CLI in another terminal: export CF_REDIS_URL=redis://127.0.0.1:{redis_port}/0", flush=True)

        import redis.asyncio as redis
        self.redis = redis.Redis.from_url(f"redis://{LOOPBACK}:{redis_port}/0")
        self.keys = Keys()
        self.http = aiohttp.ClientSession()
        try:
            await self._load_channels()
            if not await self._wait_ready(timeout_s=60):
                return 1
            generator = await self._start_events(started)
            await self._wait_until_done(started)
            await self._stop_events(generator)
            summary = await self._summary()
        finally:
            await self.http.close()
            await self.redis.aclose()
        return self._print_summary(summary)

    async def _legacy_user(self) -> dict[str, str]:
        """Get a user token for the legacy WebSocket mode and authorize the sample broadcasters.

        The plain WebSocket transport needs a user token, and allows a total cost of 10, so its
        subscriptions must be for broadcasters who authorized the app (cost 0), as on Twitch.
        """
        ids = [str(100_000 + i) for i in range(self.args.channels)]
        async with aiohttp.ClientSession() as http:
            async with http.post(self.emulator_url + "/_emulator/user-tokens", json={"user_id": LEGACY_USER_ID}) as response:
                token = await response.json()
            async with http.post(self.emulator_url + "/_emulator/authorize", json={"user_ids": ids}) as response:
                response.raise_for_status()
        return {"TWITCH_USER_ACCESS_TOKEN": token["access_token"], "TWITCH_USER_REFRESH_TOKEN": token["refresh_token"]}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.processes.append(ManagedProcess(name, argv, env, self.log_dir).start())

    async def _load_channels(self) -> None:
        types = [t for t in self.args.types.split(",") if t.strip()]
        legacy = self.args.legacy_channels
        channels = [make_channel(str(100_000 + i), login=f"user{100_000 + i}", types=types,
                                 transport_mode="websocket" if i < legacy else "conduit")
                    for i in range(self.args.channels)]
        await ChannelStore(self.redis, self.keys, Settings.from_env(passed_settings())).add(channels)
        print(f"loaded {len(channels)} channels x {len(types)} event types"
              + (f", {min(legacy, len(channels))} of them on the legacy WebSocket mode" if legacy else ""), flush=True)

    async def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            self._check_alive()
            enabled = sum(1 for raw in (await self.redis.hgetall(self.keys.shards)).values() if b'"enabled"' in raw)
            state = await self._emulator("GET", "/_emulator/state")
            subscriptions = _count_subscriptions(state)
            if enabled >= self.args.shards and subscriptions > 0:
                print(f"ready: {enabled} shards enabled, {subscriptions} subscriptions so far", flush=True)
                return True
            await asyncio.sleep(0.5)
        print("the fleet did not become ready in time; see the logs in", self.log_dir, file=sys.stderr)
        return False

    async def _start_events(self, started: float) -> str:
        # Only the channels' own event types: conduit.shard.disabled is the fleet's health signal, not load.
        types = [entry.partition(":")[0] for entry in self.args.types.split(",") if entry.strip()]
        body = {"rate": self.args.rate, "duplicate_ratio": self.args.duplicate_ratio, "types": types}
        if self.args.duration:
            body["duration_s"] = max(1.0, self.args.duration - (time.monotonic() - started) - 5)
        else:
            body["duration_s"] = 365 * 24 * 3600
        answer = await self._emulator("POST", "/_emulator/generate", body)
        print(f"generating {self.args.rate:.0f} events/s", flush=True)
        return answer["id"]

    async def _wait_until_done(self, started: float) -> None:
        while not self.stop_requested.is_set():
            self._check_alive()
            if self.args.duration and time.monotonic() - started >= self.args.duration - 5:
                return
            await asyncio.sleep(0.5)

    async def _stop_events(self, generator: str) -> None:
        await self._emulator("DELETE", f"/_emulator/generate/{generator}")
        # Let the workers publish what is in flight: wait until the published count stops moving.
        previous, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            published = (await self._stream_counters())[0]
            if published != previous:
                previous, stable_since = published, time.monotonic()
            elif time.monotonic() - stable_since > 1.5:
                return
            await asyncio.sleep(0.25)

    async def _stream_counters(self) -> tuple[int, int]:
        published = duplicates = 0
        for partition in range(Settings.from_env(passed_settings()).stream_partitions):
            counters = await self.redis.hgetall(self.keys.counters(partition))
            published += int(counters.get(b"published", 0))
            duplicates += int(counters.get(b"duplicates", 0))
        return published, duplicates

    async def _summary(self) -> dict:
        counters = await self._emulator("GET", "/_emulator/counters")
        published, duplicates = await self._stream_counters()
        sent = int(counters.get("sent", 0))
        dropped = int(counters.get("dropped_disabled", 0))
        return {"sent": sent, "dropped_by_twitch": dropped, "published": published, "duplicates": duplicates,
                "lost": sent - dropped - published}

    def _print_summary(self, summary: dict) -> int:
        print("summary:")
        print(f"  events sent by the emulator:   {summary['sent']}")
        print(f"  dropped by Twitch (emulated):  {summary['dropped_by_twitch']}")
        print(f"  events published:              {summary['published']}")
        print(f"  duplicates dropped:            {summary['duplicates']}")
        print(f"  events lost:                   {summary['lost']}")
        sys.stdout.flush()
        if summary["published"] == 0 or summary["lost"] != 0:
            print(f"dev run failed: {summary['lost']} events lost, {summary['published']} published; logs in {self.log_dir}",
                  file=sys.stderr)
            return 1
        return 0

    async def _emulator(self, method: str, path: str, body: dict | None = None) -> dict:
        async with self.http.request(method, self.emulator_url + path, json=body) as response:
            if response.status >= 400:
                raise RuntimeError(f"emulator {method} {path} failed with {response.status}: {await response.text()}")
            return await response.json(content_type=None) if response.status != 204 else {}

    def _check_alive(self) -> None:
        for process in self.processes:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited with {process.process.returncode}; see {process.log_path}")

    def stop_all(self) -> None:
        # The coordinator first, so it does not move the shards of stopping workers; Redis last.
        order = [p for p in self.processes if p.name == "coordinator"]
        order += [p for p in reversed(self.processes) if p.name != "coordinator"]
        for process in order:
            # SIGINT: the workers stop at once instead of draining to a coordinator that is gone.
            process.stop(timeout_s=10, sig=signal.SIGINT if process.name.startswith("worker") else signal.SIGTERM)


def _count_subscriptions(state: dict) -> int:
    subscriptions = state.get("subscriptions", 0)
    if isinstance(subscriptions, dict):
        return int(subscriptions.get("total", subscriptions.get("enabled", 0)))
    if isinstance(subscriptions, list):
        return len(subscriptions)
    return int(subscriptions)
