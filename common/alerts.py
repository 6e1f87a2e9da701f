"""Alerts: each fires once and resolves once, to the log and the `cf:alerts` stream."""

from __future__ import annotations

import logging
import time

import redis.asyncio as redis
import redis.exceptions

from .keys import Keys

log = logging.getLogger(__name__)

ALERTS_MAXLEN = 10_000


class Alerts:
    """Keeps the set of active alerts and records each change once."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self.active: dict[str, dict] = {}

    async def fire(self, name: str, severity: str, message: str, value: str = "") -> None:
        """Raise `name` unless it is already active."""
        if name in self.active:
            return
        alert = {"name": name, "severity": severity, "message": message, "value": value,
                 "fired_at_ms": int(time.time() * 1000)}
        self.active[name] = alert
        log.error("alert %s (%s): %s", name, severity, message)
        await self._record({"state": "firing", **alert})

    async def resolve(self, name: str, message: str = "") -> None:
        """Clear `name` if it is active."""
        alert = self.active.pop(name, None)
        if alert is None:
            return
        log.warning("alert %s resolved%s", name, f": {message}" if message else "")
        await self._record({"state": "resolved", "name": name, "severity": alert["severity"], "message": message,
                            "value": "", "resolved_at_ms": int(time.time() * 1000)})

    async def event(self, name: str, severity: str, message: str, value: str = "") -> None:
        """Record a one-off alert that has no resolved state (for example "conduit lost")."""
        log.error("alert %s (%s): %s", name, severity, message)
        await self._record({"state": "event", "name": name, "severity": severity, "message": message, "value": value,
                            "fired_at_ms": int(time.time() * 1000)})

    async def _record(self, fields: dict) -> None:
        try:
            await self._client.xadd(self._keys.alerts, {k: str(v) for k, v in fields.items()},
                                    maxlen=ALERTS_MAXLEN, approximate=True)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.error("could not record alert %s in Redis: %s", fields.get("name"), exc)
