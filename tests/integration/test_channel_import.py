"""`conduit-fleet channels import` of 100,000 lines: under a minute, and idempotent."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from common.local import fleet_env, free_port

pytestmark = pytest.mark.timeout(180)

LINES = 100_000


def _import(redis_port: int, path) -> tuple[subprocess.CompletedProcess, float]:
    env = fleet_env(redis_port=redis_port, emulator_port=free_port())
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "common.cli", "channels", "import", str(path)], env=env,
                            capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - started


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
async def test_import_100k_fast_and_idempotent(redis_client, redis_port, tmp_path, suffix):
    path = tmp_path / f"channels.{suffix}"
    if suffix == "csv":
        rows = ["broadcaster_user_id,login,types"]
        rows += [f"{10_000_000 + i},user{i},stream.online:1;channel.update:2" for i in range(LINES)]
    else:
        rows = [f'{{"broadcaster_user_id": "{10_000_000 + i}", "login": "user{i}", "types": ["stream.online:1"]}}'
                for i in range(LINES)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    first, first_s = _import(redis_port, path)
    snapshot = await redis_client.hgetall("cf:channels")
    second, second_s = _import(redis_port, path)

    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"imported {LINES} channels from {path}"
    assert first_s < 60
    assert second.returncode == 0, second.stderr
    assert second_s < 60
    assert await redis_client.hlen("cf:channels") == LINES
    assert await redis_client.hgetall("cf:channels") == snapshot
    print(f"import of {LINES} {suffix} lines: {first_s:.1f} s, again {second_s:.1f} s")
