"""The `conduit-fleet` command line, run as a real process against a real Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common.local import fleet_env, free_port

pytestmark = pytest.mark.timeout(120)


def _cli(redis_port: int, *args: str, extra_env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    env = fleet_env(redis_port=redis_port, emulator_port=free_port(), extra=extra_env)
    return subprocess.run([sys.executable, "-m", "common.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


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
