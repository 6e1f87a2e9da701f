"""Run the emulator from ``EMULATOR_*`` variables: ``python -m emulator``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from .app import serve
from .settings import EmulatorSettings

logger = logging.getLogger(__name__)


async def _run(settings: EmulatorSettings) -> None:
    task = asyncio.create_task(serve(settings), name="emulator")
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = EmulatorSettings.from_env()
    except ValueError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
