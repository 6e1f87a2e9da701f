"""A fleet of real processes for integration and scenario tests.

The emulator, the coordinator and the workers run as subprocesses on 127.0.0.1, with time shrunk by
the same factor in the emulator and the fleet, so a Twitch 10 s timer lasts 10 x TIME_SCALE seconds.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import redis.asyncio as redis

from common.channels import ChannelStore, make_channel
from common.keys import Keys
from common.local import (
    DEV_CLIENT_ID, DEV_CLIENT_SECRET, LOOPBACK, ManagedProcess, emulator_env, fleet_env, free_port, python_module,
    wait_for_port,
)

TIME_SCALE = 0.2
KEEPALIVE_GRACE = 2.0
PARTITIONS = 4


class Fleet:
    """The processes of one test and helpers to drive and inspect them."""

    def __init__(self, tmp_path: Path, redis_port: int, *, shard_count: int = 20, time_scale: float = TIME_SCALE,
                 env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.redis_port = redis_port
        self.shard_count = shard_count
        self.time_scale = time_scale
        self.extra_env = env or {}
        self.emulator_port = free_port()
        self.http_port = free_port()
        self.emulator_url = f"http://{LOOPBACK}:{self.emulator_port}"
        self.keys = Keys()
        self.processes: dict[str, ManagedProcess] = {}
        # A timeout turns a hang after a Redis restart into an error with a traceback.
        self.redis = redis.Redis(host=LOOPBACK, port=redis_port, socket_timeout=10, socket_connect_timeout=5)
        self.http = aiohttp.ClientSession()
        self._token = ""

    def env(self, **extra: str) -> dict[str, str]:
        return fleet_env(redis_port=self.redis_port, emulator_port=self.emulator_port, time_scale=self.time_scale,
                         http_port=self.http_port,
                         extra={"CF_SHARD_COUNT": str(self.shard_count), "CF_STREAM_PARTITIONS": str(PARTITIONS),
                                "CF_METRICS_PORT": "0", "CF_RECONCILE_INTERVAL_S": "20",
                                "CF_DRAIN_TIMEOUT_S": "3",
                                # Under load on a shared 2-core machine a keepalive can be a second late.
                                "CF_KEEPALIVE_GRACE": str(KEEPALIVE_GRACE), **self.extra_env, **extra})

    async def start_emulator(self, **extra_env: str) -> None:
        env = emulator_env(port=self.emulator_port, time_scale=self.time_scale, extra=extra_env)
        self.processes["emulator"] = ManagedProcess(
            "emulator", python_module("common.cli", "emulator"), env, self.tmp_path).start()
        await asyncio.to_thread(wait_for_port, self.emulator_port)

    def start_coordinator(self, name: str = "coordinator") -> ManagedProcess:
        """Start a coordinator; the first one serves the API on `http_port`, later ones on free ports."""
        serving = any(n.startswith(("coordinator", "standby")) for n in self.processes)
        env = self.env(CF_HTTP_PORT=str(free_port())) if serving else self.env()
        process = ManagedProcess(name, python_module("common.cli", "coordinator"), env, self.tmp_path).start()
        self.processes[name] = process
        return process

    def start_worker(self, name: str) -> ManagedProcess:
        process = ManagedProcess(name, python_module("common.cli", "worker"), self.env(CF_WORKER_ID=name),
                                 self.tmp_path).start()
        self.processes[name] = process
        return process

    async def start(self, workers: int = 2) -> None:
        await self.start_emulator()
        self.start_coordinator()
        for index in range(workers):
            self.start_worker(f"worker-{index + 1}")

    async def close(self) -> None:
        for name in ["coordinator"] + [n for n in self.processes if n != "coordinator"]:
            process = self.processes.get(name)
            if process is not None:
                await asyncio.to_thread(process.stop, 10)
        await self.http.close()
        await self.redis.aclose()

    def logs(self) -> str:
        return "\n".join(f"===== {name}\n{p.output()[-4000:]}" for name, p in self.processes.items())

    # -- emulator and Helix -------------------------------------------------------------------

    async def control(self, method: str, path: str, body: dict | None = None) -> dict:
        async with self.http.request(method, f"{self.emulator_url}/_emulator{path}", json=body) as response:
            text = await response.text()
            assert response.status < 400, f"emulator {method} {path}: {response.status} {text}"
            return await response.json(content_type=None) if text else {}

    async def api(self, path: str) -> tuple[int, dict]:
        """GET a coordinator API path; return the status and the JSON body."""
        async with self.http.get(f"http://{LOOPBACK}:{self.http_port}{path}") as response:
            return response.status, await response.json(content_type=None)

    async def helix(self, method: str, path: str, body: dict | None = None, **params: str) -> dict:
        """Call the emulator's Helix with an app token of the test's own, getting a new one after a 401."""
        for _ in range(2):
            if not self._token:
                form = {"client_id": DEV_CLIENT_ID, "client_secret": DEV_CLIENT_SECRET, "grant_type": "client_credentials"}
                async with self.http.post(f"{self.emulator_url}/oauth2/token", data=form) as response:
                    self._token = (await response.json())["access_token"]
            # The observer header keeps the test's own polling out of the fleet's rate budget and faults.
            headers = {"Authorization": f"Bearer {self._token}", "Client-Id": DEV_CLIENT_ID,
                       "X-Emulator-Observer": "1"}
            url = f"{self.emulator_url}/helix{path}"
            async with self.http.request(method, url, params=params, headers=headers, json=body) as response:
                text = await response.text()
                if response.status == 401:
                    self._token = ""
                    continue
                return await response.json(content_type=None) if text else {"status": response.status}
        raise AssertionError(f"Helix {method} {path} answered 401 twice")

    async def twitch_shards(self) -> dict[str, dict]:
        """Return shard id → shard as Twitch (the emulator) lists it for the fleet's conduit."""
        conduit_id = (await self.redis.hget(self.keys.conduit, "id") or b"").decode()
        if not conduit_id:
            return {}
        shards: dict[str, dict] = {}
        params = {"conduit_id": conduit_id}
        while True:
            page = await self.helix("GET", "/eventsub/conduits/shards", **params)
            for shard in page.get("data", []):
                shards[shard["id"]] = shard
            cursor = (page.get("pagination") or {}).get("cursor")
            if not cursor:
                return shards
            params["after"] = cursor

    async def update_shard_calls(self) -> int:
        counters = await self.control("GET", "/counters")
        return int(counters["helix_calls"].get("PATCH /eventsub/conduits/shards", 0))

    # -- desired state and streams ----------------------------------------------------------------

    async def add_channels(self, count: int, types: list[str], first_id: int = 1000, mode: str = "conduit") -> None:
        channels = [make_channel(str(first_id + i), types=types, transport_mode=mode) for i in range(count)]
        await self.channel_store().add(channels)

    def channel_store(self) -> ChannelStore:
        """A ChannelStore with the fleet's settings (legacy capacity, identity grace, time scale)."""
        from common.settings import Settings  # noqa: PLC0415 - keeps the module import light

        environ = self.env()
        return ChannelStore(self.redis, self.keys, Settings.from_env(environ))

    async def use_legacy_user(self, broadcaster_ids: list[str], user_id: str = "9999") -> None:
        """Give the fleet a user token for the legacy WebSocket mode and authorize the broadcasters.

        Authorized broadcasters make their subscriptions cost 0, as on Twitch; the plain WebSocket
        transport allows a total cost of only 10. Call this after `start_emulator` and before starting
        the fleet's processes.
        """
        token = await self.control("POST", "/user-tokens", {"user_id": user_id})
        self.extra_env["TWITCH_USER_ACCESS_TOKEN"] = token["access_token"]
        self.extra_env["TWITCH_USER_REFRESH_TOKEN"] = token["refresh_token"]
        if broadcaster_ids:
            await self.control("POST", "/authorize", {"user_ids": broadcaster_ids})

    async def helix_as_user_count(self, user_id: str = "9999") -> int:
        """Return how many enabled plain WebSocket subscriptions the legacy user has on Twitch."""
        return (await self._helix_as_user(user_id))[0]

    async def user_points_left(self, user_id: str = "9999") -> int:
        """Return the points left in the legacy user's rate-limit bucket on Twitch."""
        return (await self._helix_as_user(user_id))[1]

    async def _helix_as_user(self, user_id: str) -> tuple[int, int]:
        token = await self.control("POST", "/user-tokens", {"user_id": user_id})
        headers = {"Authorization": f"Bearer {token['access_token']}", "Client-Id": DEV_CLIENT_ID,
                   "X-Emulator-Observer": "1"}
        url = f"{self.emulator_url}/helix/eventsub/subscriptions"
        async with self.http.get(url, params={"status": "enabled"}, headers=headers) as response:
            total = int((await response.json())["total"])
            return total, int(response.headers["Ratelimit-Remaining"])

    async def legacy_sessions(self) -> list[dict]:
        """Return the emulator's open sessions that carry plain WebSocket subscriptions."""
        sessions = await self.control("GET", "/sessions")
        items = sessions.get("sessions", sessions) if isinstance(sessions, dict) else sessions
        return [s for s in items if s.get("websocket_subscriptions") and s.get("state") != "closed"]

    async def stream_entries(self) -> list[dict[str, bytes]]:
        entries = []
        for partition in range(PARTITIONS):
            for _, fields in await self.redis.xrange(self.keys.events(partition)):
                entries.append({key.decode(): value for key, value in fields.items()})
        return entries

    async def published_count(self) -> int:
        total = 0
        for partition in range(PARTITIONS):
            total += await self.redis.xlen(self.keys.events(partition))
        return total

    # -- waiting ----------------------------------------------------------------------------------

    async def wait_for(self, check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
        """Poll `check` until it returns True; return the seconds it took, or fail with the logs."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if await check():
                return time.monotonic() - started
            for name, process in self.processes.items():
                assert process.alive(), f"{name} exited early:\n{self.logs()}"
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what}\n{self.logs()}")

    async def all_shards_enabled(self) -> bool:
        shards = await self.twitch_shards()
        return len(shards) == self.shard_count and all(s["status"] == "enabled" for s in shards.values())

    async def settled(self) -> bool:
        """Return whether every shard is enabled and no other session is open (moves finished)."""
        sessions = await self.control("GET", "/sessions")
        workers = {name for name, process in self.processes.items() if name.startswith("worker") and process.alive()}
        counts = collections.Counter((await self.assignment()).values())
        if len(workers) <= self.shard_count and not workers <= counts.keys():
            return False
        live_counts = [counts[worker] for worker in workers]
        if live_counts and max(live_counts) - min(live_counts) > 1:
            return False  # handoffs still running
        legacy = await self.redis.hlen(self.keys.legacy_assignment)
        return len(sessions) - legacy == self.shard_count and await self.all_shards_enabled()

    async def wait_ready(self, subscriptions: int, timeout_s: float = 60) -> None:
        await self.wait_for(self.settled, timeout_s, "every shard enabled and no spare session")

        async def subscribed() -> bool:
            page = await self.helix("GET", "/eventsub/subscriptions", status="enabled")
            return int(page.get("total", 0)) >= subscriptions

        await self.wait_for(subscribed, timeout_s, f"{subscriptions} enabled subscriptions")

    async def generate(self, **body) -> dict:
        return await self.control("POST", "/generate?wait=1", body)

    async def wait_published(self, expected: int, timeout_s: float = 30) -> None:
        async def done() -> bool:
            return await self.published_count() >= expected
        await self.wait_for(done, timeout_s, f"{expected} published events")
        await asyncio.sleep(0.5)  # anything beyond `expected` would be a duplicate: give it time to show

    async def worker_metric(self, worker: str, name: str, labels: str = "") -> float:
        """Return one sample of a worker's Prometheus metrics, e.g. ('cf_worker_binds_total', 'result="failed"')."""
        port = int(await self.redis.hget(self.keys.worker_info(worker), "metrics_port") or 0)
        assert port, f"{worker} has no metrics port"
        async with self.http.get(f"http://{LOOPBACK}:{port}/metrics") as response:
            text = await response.text()
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def sessions_of(self, shard_id: str) -> list[dict]:
        return [s for s in await self.control("GET", "/sessions") if shard_id in s["shard_ids"]]

    async def assignment(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in (await self.redis.hgetall(self.keys.assignment)).items()}

    async def close_process(self, name: str) -> int | None:
        """Stop a process with SIGTERM and forget it; return its exit code."""
        process = self.processes.pop(name)
        return await asyncio.to_thread(process.stop, 30)

    def kill(self, name: str) -> None:
        self.processes[name].signal(signal.SIGKILL)
        self.processes[name].process.wait(5)
        del self.processes[name]
