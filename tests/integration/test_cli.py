"""The `conduit-fleet` command line, run as a real process against a real Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest

from common.channels import ChannelStore
from common.keys import Keys
from common.local import fleet_env, free_port
from common.settings import Settings

pytestmark = pytest.mark.timeout(120)


def _cli(redis_port: int, *args: str, extra_env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    env = fleet_env(redis_port=redis_port, emulator_port=free_port(), extra=extra_env)
    return _run_cli(env, *args, timeout=timeout)


def _run_cli(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


async def _modes(redis_client) -> dict[str, str]:
    channels = await ChannelStore(redis_client, Keys(), Settings.from_env({})).list()
    return {c.broadcaster_user_id: c.transport_mode for c in channels}


async def test_channels_add_import_list_remove(redis_client, redis_port, tmp_path):
    csv_file = tmp_path / "channels.csv"
    csv_file.write_text("broadcaster_user_id,login,types\n2001,alice,stream.online:1\n2002,bob,\n", encoding="utf-8")
    jsonl_file = tmp_path / "channels.jsonl"
    jsonl_file.write_text('{"broadcaster_user_id": "2003", "display_name": "配信者"}\n', encoding="utf-8")

    added = _cli(redis_port, "channels", "add", "2000", "2001")
    imported = _cli(redis_port, "channels", "import", str(csv_file))
    imported_again = _cli(redis_port, "channels", "import", str(jsonl_file))
    removed = _cli(redis_port, "channels", "remove", "2000")
    listed = _cli(redis_port, "channels", "list")

    assert added.returncode == 0, added.stderr
    assert imported.stdout.strip() == f"imported 2 channels from {csv_file}"
    assert imported_again.returncode == 0, imported_again.stderr
    assert removed.stdout.strip() == "removed 1 channels"
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [row[0] for row in rows] == ["2001", "2002", "2003"]
    assert rows[0][1:] == ["alice", "conduit", "stream.online:1"]
    assert await redis_client.hlen("cf:channels") == 3


async def test_channels_import_rejects_bad_line(redis_client, redis_port, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("broadcaster_user_id\n123\nnot-a-number\n", encoding="utf-8")

    result = _cli(redis_port, "channels", "import", str(bad))

    assert result.returncode == 2
    assert f"{bad}:3" in result.stderr
    assert "not-a-number" in result.stderr
    assert await redis_client.hlen("cf:channels") == 0


def test_invalid_setting_named_in_error(redis_port):
    result = _cli(redis_port, "settings", extra_env={"CF_STREAM_PARTITIONS": "zero"})

    assert result.returncode == 2
    assert "CF_STREAM_PARTITIONS='zero'" in result.stderr


async def test_tail_prints_newest_entries(redis_client, redis_port):
    for number in range(3):
        await redis_client.xadd("cf:events:{1}", {"type": "stream.online", "broadcaster_user_id": "42",
                                                   "event": f'{{"n":{number}}}'})

    result = _cli(redis_port, "tail", "--count", "2")

    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert len(lines) == 2
    assert lines[-1].endswith('stream.online 42 {"n":2}')


@pytest.mark.timeout(180)
def test_dev_run_loses_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "common.cli", "dev", "--duration", "25", "--channels", "60", "--shards", "4",
         "--rate", "200", "--http-port", str(free_port()), "--log-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=150)

    summary = dict(line.strip().rsplit(":", 1) for line in result.stdout.splitlines() if line.startswith("  "))
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(summary["events published"]) > 0
    assert int(summary["events lost"]) == 0


async def test_channels_mode_and_fallback_mark(redis_client, redis_port):
    _cli(redis_port, "channels", "add", "3001", "3002", "3003", "--types", "stream.online:1")

    moved = _cli(redis_port, "channels", "mode", "both", "3001", "3002")
    again = _cli(redis_port, "channels", "mode", "both", "3001")
    await ChannelStore(redis_client, Keys(), Settings.from_env({})).set_mode(["3003"], "websocket", fallback=True)
    listed = _cli(redis_port, "channels", "list")

    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.strip() == "set 2 channels to both (0 already were)"
    assert again.stdout.strip() == "set 0 channels to both (1 already were)"
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [row[2] for row in rows] == ["both", "both", "websocket (fallback)"]
    assert await redis_client.hlen("cf:legacy:slots") == 3


async def test_channels_mode_rejects_unknown_and_full(redis_client, redis_port):
    small = {"CF_LEGACY_CONNECTIONS": "1", "CF_LEGACY_SUBSCRIPTIONS_PER_CONNECTION": "2"}
    _cli(redis_port, "channels", "add", "3101", "3102", "3103", "--types", "stream.online:1")

    unknown = _cli(redis_port, "channels", "mode", "both", "3101", "3999")
    invalid = _cli(redis_port, "channels", "mode", "both", "31x")
    full = _cli(redis_port, "channels", "mode", "websocket", "3101", "3102", "3103", extra_env=small)

    assert unknown.returncode == 2
    assert "unknown channels 3999" in unknown.stderr
    assert invalid.returncode == 2
    assert "invalid broadcaster id '31x'" in invalid.stderr
    assert full.returncode == 2
    assert full.stderr.startswith("conduit-fleet: error: ")
    assert "CF_LEGACY_CONNECTIONS" in full.stderr
    assert "Traceback" not in full.stderr
    assert await _modes(redis_client) == {"3101": "conduit", "3102": "conduit", "3103": "conduit"}


async def test_channels_add_and_import_over_capacity(redis_client, redis_port, tmp_path):
    small = {"CF_LEGACY_CONNECTIONS": "1", "CF_LEGACY_SUBSCRIPTIONS_PER_CONNECTION": "1"}
    jsonl_file = tmp_path / "legacy.jsonl"
    jsonl_file.write_text('{"broadcaster_user_id": "3201", "types": "stream.online:1", "transport_mode": "websocket"}\n'
                          '{"broadcaster_user_id": "3202", "types": "stream.online:1", "transport_mode": "both"}\n',
                          encoding="utf-8")

    added = _cli(redis_port, "channels", "add", "3201", "3202", "--types", "stream.online:1", "--mode", "websocket",
                 extra_env=small)
    imported = _cli(redis_port, "channels", "import", str(jsonl_file), extra_env=small)

    for result in (added, imported):
        assert result.returncode == 2
        assert result.stderr.startswith("conduit-fleet: error: ")
        assert "CF_LEGACY_CONNECTIONS" in result.stderr
        assert "Traceback" not in result.stderr
    assert await redis_client.hlen("cf:channels") == 0


async def test_migrate_status_json_and_text(redis_client, redis_port):
    _cli(redis_port, "channels", "add", "3301", "3302", "--types", "stream.online:1", "--mode", "websocket")
    _cli(redis_port, "channels", "add", "3303", "--types", "stream.online:1,channel.update:2", "--mode", "both")
    _cli(redis_port, "channels", "add", "3304")

    as_json = _cli(redis_port, "migrate", "status", "--json")
    as_text = _cli(redis_port, "migrate", "status")

    assert as_json.returncode == 0, as_json.stderr
    report = orjson.loads(as_json.stdout)
    assert report["status"] == "not_started"
    assert report["channels"] == {"websocket": 2, "both": 1, "conduit": 1, "fallback": 0, "total": 4}
    assert report["legacy"]["used"] == 4
    assert sorted(report["legacy"]["load"]) == ["0", "1", "2"]
    assert report["comparison"]["current_batch"] is None
    assert as_text.returncode == 0, as_text.stderr
    text = as_text.stdout
    assert text.startswith("migration: not_started\n")
    assert "channels: 4 in all; websocket 2, both 1, conduit 1 (25 % on the conduit), fell back 0" in text
    assert "legacy capacity: 4 / 900 subscriptions placed (300 per connection)" in text
    assert "  legacy-2: 2 / 300 placed, no worker has reported this connection" in text
    assert "comparison, current batch: none (no batch is soaking)" in text
    assert "comparison, all time (0 events compared):" in text
    assert "last rollback: none" in text
    assert text.rstrip().endswith("fallback: not active")


async def test_migrate_without_leader_times_out(redis_client, redis_port):
    timed_out = _cli(redis_port, "migrate", "pause", "--timeout", "0.5")
    bad_phase = _cli(redis_port, "migrate", "start", "--phase", "9")

    assert timed_out.returncode == 1
    assert "no coordinator leader responded to the 'pause' command within" in timed_out.stderr
    assert "stays queued" in timed_out.stderr
    assert bad_phase.returncode == 2
    assert "invalid phase 9: expected 1 to 4" in bad_phase.stderr
    assert await redis_client.llen("cf:migration:commands") == 1


async def test_migrate_commands_with_leader(fleet):
    await fleet.start_emulator()
    fleet.start_coordinator()
    await fleet.add_channels(5, ["stream.online:1"], first_id=3400, mode="websocket")
    env = fleet.env()

    async def leading() -> bool:
        try:
            status, body = await fleet.api("/healthz")
        except OSError:
            return False
        return status == 200 and body.get("leader") is True

    await fleet.wait_for(leading, 30, "a leading coordinator")

    def run(*args: str) -> subprocess.CompletedProcess:
        return _run_cli(env, "migrate", *args)

    rejected = await asyncio.to_thread(run, "pause")
    started = await asyncio.to_thread(run, "start", "--phase", "1")
    paused = await asyncio.to_thread(run, "pause")
    report = orjson.loads((await asyncio.to_thread(run, "status", "--json")).stdout)
    rolled_back = await asyncio.to_thread(run, "rollback")
    after = orjson.loads((await asyncio.to_thread(run, "status", "--json")).stdout)

    assert rejected.returncode == 2, rejected.stdout + rejected.stderr
    assert "the migration is not_started, not running" in rejected.stderr
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "migration running through phase 1"
    assert paused.stdout.strip() == ("migration paused; the current batch stays where it is, and the rollback "
                                     "rules still apply to it")
    assert report["status"] == "paused"
    assert report["phase"] == 1
    assert report["batch"]["number"] == 1
    assert report["channels"]["both"] == 1
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert rolled_back.stdout.strip() == "1 channel back on websocket; the migration is paused"
    assert after["channels"]["websocket"] == 5
    assert after["rollback"]["automatic"] is False
    assert after["rollback"]["reason"] == "manual rollback of the parallel run"
