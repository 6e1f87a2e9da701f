"""Processes and helpers shared by the benchmarks: Redis, the emulator, fleets and Helix calls.

Every process listens on 127.0.0.1 only. Each `Stack` owns its processes and stops them by pid.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import psutil
import redis.asyncio as redis

from common.channels import ChannelStore, make_channel
from common.keys import Keys
from common.local import (
    DEV_CLIENT_ID, DEV_CLIENT_SECRET, LOOPBACK, ManagedProcess, emulator_env, fleet_env, free_port, python_module,
    start_redis, wait_for_port,
)

CHAT_TYPE = "channel.chat.message"
REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time of one process, in seconds."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def rss_bytes(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def bench_env(env: dict[str, str]) -> dict[str, str]:
    """Return `env` with this worktree first on the import path, for processes started in another folder."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))}


class Stack:
    """A Redis server and an emulator, plus any fleet or receiver processes started through it."""

    def __init__(self, log_dir: Path, emulator_settings: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.emulator_settings = emulator_settings or {}
        self.processes: dict[str, ManagedProcess] = {}
        self.keys = Keys()
        self._token = ""

    async def start(self) -> None:
        redis_process, self.redis_port = await asyncio.to_thread(start_redis, self.log_dir)
        self.processes["redis"] = redis_process
        self.emulator_port = free_port()
        self.emulator_url = f"http://{LOOPBACK}:{self.emulator_port}"
        self.ws_url = f"ws://{LOOPBACK}:{self.emulator_port}/ws"
        env = emulator_env(port=self.emulator_port, extra={"EMULATOR_LOG_LEVEL": "WARNING", **self.emulator_settings})
        self.spawn("emulator", python_module("common.cli", "emulator"), env)
        await asyncio.to_thread(wait_for_port, self.emulator_port)
        self.redis = redis.Redis(host=LOOPBACK, port=self.redis_port, socket_timeout=30)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> ManagedProcess:
        process = ManagedProcess(name, argv, env, self.log_dir)
        if cwd is None:
            process.start()
        else:
            previous = os.getcwd()
            os.chdir(cwd)
            try:
                process.start()
            finally:
                os.chdir(previous)
        self.processes[name] = process
        return process

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if not process.alive():
                raise RuntimeError(f"{name} exited with {process.process.returncode}; log: {process.log_path}\n"
                                   f"{process.output()[-3000:]}")

    async def stop_process(self, name: str, timeout_s: float = 15.0) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            await asyncio.to_thread(process.stop, timeout_s)

    async def close(self) -> None:
        """Stop every process by pid: coordinators first, Redis last."""
        names = list(self.processes)
        order = [n for n in names if n.startswith("coordinator")]
        order += [n for n in reversed(names) if n not in order and n != "redis"]
        order += [n for n in names if n == "redis"]
        if hasattr(self, "http"):
            await self.http.close()
            await self.redis.aclose()
        for name in order:
            await self.stop_process(name)

    # -- emulator control API and Helix ------------------------------------------------------------

    async def control(self, method: str, path: str, body: dict | None = None) -> dict | list:
        async with self.http.request(method, f"{self.emulator_url}/_emulator{path}", json=body) as response:
            text = await response.text()
            if response.status >= 400:
                raise RuntimeError(f"emulator {method} {path} failed with {response.status}: {text[:500]}")
            return await response.json(content_type=None) if text else {}

    async def app_token(self) -> str:
        if not self._token:
            form = {"client_id": DEV_CLIENT_ID, "client_secret": DEV_CLIENT_SECRET, "grant_type": "client_credentials"}
            async with self.http.post(f"{self.emulator_url}/oauth2/token", data=form) as response:
                self._token = (await response.json())["access_token"]
        return self._token

    async def helix(self, method: str, path: str, body: dict | None = None, **params: str) -> dict:
        headers = {"Authorization": f"Bearer {await self.app_token()}", "Client-Id": DEV_CLIENT_ID}
        async with self.http.request(method, f"{self.emulator_url}/helix{path}", params=params, headers=headers,
                                     json=body) as response:
            text = await response.text()
            if response.status >= 400:
                raise RuntimeError(f"Helix {method} {path} failed with {response.status}: {text[:500]}")
            return await response.json(content_type=None) if text else {}

    async def create_conduit(self, shard_count: int) -> str:
        answer = await self.helix("POST", "/eventsub/conduits", {"shard_count": shard_count})
        return answer["data"][0]["id"]

    async def subscribe_chat(self, conduit_id: str, broadcaster_ids: list[str], concurrency: int = 16) -> None:
        """Create one channel.chat.message subscription per broadcaster on `conduit_id`."""
        queue = list(broadcaster_ids)

        async def create_some() -> None:
            while queue:
                broadcaster = queue.pop()
                await self.helix("POST", "/eventsub/subscriptions", {
                    "type": CHAT_TYPE, "version": "1",
                    "condition": {"broadcaster_user_id": broadcaster, "user_id": broadcaster},
                    "transport": {"method": "conduit", "conduit_id": conduit_id},
                })

        await asyncio.gather(*(create_some() for _ in range(concurrency)))

    async def conduit_shards(self, conduit_id: str) -> list[dict]:
        """Return the shards of one conduit as the control API's state lists them (no rate limit)."""
        state = await self.control("GET", "/state")
        for conduit in state["conduits"]:
            if conduit["id"] == conduit_id:
                return conduit["shards"]
        return []

    async def wait_enabled(self, conduit_id: str, shard_count: int, timeout_s: float, what: str) -> float:
        """Wait until every shard of `conduit_id` is enabled; return the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            shards = await self.conduit_shards(conduit_id)
            if len(shards) == shard_count and all(shard["status"] == "enabled" for shard in shards):
                return time.monotonic() - started
            self.check_alive()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}: "
                           f"{sum(s['status'] == 'enabled' for s in await self.conduit_shards(conduit_id))} "
                           f"of {shard_count} shards enabled; logs in {self.log_dir}")

    # -- fleet ---------------------------------------------------------------------------------------

    def fleet_env(self, **extra: str) -> dict[str, str]:
        return fleet_env(redis_port=self.redis_port, emulator_port=self.emulator_port, http_port=free_port(),
                         extra={"CF_METRICS_PORT": "-1", "CF_LOG_LEVEL": "WARNING", **extra})

    def start_coordinator(self, **extra: str) -> ManagedProcess:
        return self.spawn("coordinator", python_module("common.cli", "coordinator"), self.fleet_env(**extra))

    def start_worker(self, name: str, **extra: str) -> ManagedProcess:
        env = self.fleet_env(CF_WORKER_ID=name, **extra)
        return self.spawn(name, python_module("common.cli", "worker"), env)

    async def add_channels(self, broadcaster_ids: list[str], types: list[str]) -> None:
        await ChannelStore(self.redis, self.keys).add([make_channel(b, types=types) for b in broadcaster_ids])

    async def fleet_conduit_id(self) -> str:
        return (await self.redis.hget(self.keys.conduit, "id") or b"").decode()

    async def fleet_settled(self, conduit_id: str, workers: list[str], shard_count: int) -> bool:
        """Return whether each worker holds its share of shards, all enabled, and no spare session is open."""
        assignment = {k.decode(): v.decode() for k, v in (await self.redis.hgetall(self.keys.assignment)).items()}
        counts = [sum(1 for owner in assignment.values() if owner == worker) for worker in workers]
        if len(assignment) != shard_count or max(counts) - min(counts) > 1:
            return False
        shards = await self.conduit_shards(conduit_id)
        if len(shards) != shard_count or any(shard["status"] != "enabled" for shard in shards):
            return False
        # An open session bound to no shard is a handoff that has not finished yet.
        sessions = await self.control("GET", "/sessions")
        return not any(not session["shard_ids"] for session in sessions)

    async def wait_fleet_settled(self, workers: list[str], shard_count: int, timeout_s: float) -> str:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            self.check_alive()
            conduit_id = await self.fleet_conduit_id()
            if conduit_id and await self.fleet_settled(conduit_id, workers, shard_count):
                return conduit_id
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the fleet did not settle within {timeout_s:.0f} s; logs in {self.log_dir}")

    async def stream_published(self) -> int:
        total = 0
        for partition in range(4):
            total += int(await self.redis.hget(self.keys.counters(partition), "published") or 0)
        return total
