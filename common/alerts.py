"""Alerts: each fires once and resolves once, to the log, the `cf:alerts` stream and a webhook.

Active alerts are also kept in the `cf:alerts:active` hash, so every coordinator replica can show them
and a newly elected leader neither fires them again nor leaves them unresolved.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import orjson
import redis.asyncio as redis
import redis.exceptions

from .backoff import Backoff
from .keys import Keys

log = logging.getLogger(__name__)

ALERTS_MAXLEN = 10_000
# Discord rejects a `content` longer than 2,000 characters (Discord API reference, Execute Webhook).
WEBHOOK_TEXT_MAX = 2_000


def webhook_text(state: str, alert: dict) -> str:
    """Format one alert change as the chat line a webhook receives, English first, then Japanese."""
    tag = "RESOLVED" if state == "resolved" else alert["severity"].upper()
    lines = [f"[{tag}] {alert['name']}: {alert['message']}"]
    if alert.get("message_ja"):
        lines.append(alert["message_ja"])
    return "\n".join(lines)[:WEBHOOK_TEXT_MAX]


class WebhookNotifier:
    """Posts alert lines to a Slack- or Discord-compatible webhook from a queue, with retries.

    The body carries the same text as `text` (Slack) and `content` (Discord). The URL contains a secret,
    so no log line names it or an aiohttp error that could print it.
    """

    def __init__(self, url: str, http: aiohttp.ClientSession, *, attempts: int = 5, base_delay_s: float = 0.5,
                 max_delay_s: float = 30.0, queue_max: int = 1000) -> None:
        self._url = url
        self._http = http
        self._attempts = attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._queue: asyncio.Queue[str] = asyncio.Queue(queue_max)
        self._task: asyncio.Task | None = None
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alert webhook")

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop after sending what is queued, waiting at most `timeout_s`."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except asyncio.TimeoutError:
            log.warning("closing the alert webhook with %d messages not sent", self._queue.qsize())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def send(self, text: str) -> None:
        """Queue one message; drop it with a log line when the queue is full."""
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self.failed += 1
            log.error("alert webhook queue full; dropping a message")

    async def _run(self) -> None:
        while True:
            text = await self._queue.get()
            try:
                await self.deliver(text)
            finally:
                self._queue.task_done()

    async def deliver(self, text: str) -> bool:
        """Post `text` until the receiver accepts it or the attempts run out; return whether it was accepted."""
        backoff = Backoff(base_s=self._base_delay_s, cap_s=self._max_delay_s)
        body = orjson.dumps({"text": text, "content": text})
        for attempt in range(1, self._attempts + 1):
            problem = await self._post(body)
            if problem is None:
                self.delivered += 1
                return True
            if problem.startswith("HTTP 4") and problem != "HTTP 429":
                break  # the receiver rejects this message; sending it again would not help
            if attempt < self._attempts:
                delay_s = backoff.next_delay()
                log.warning("alert webhook delivery failed (%s, attempt %d of %d); retrying in %.1f s",
                            problem, attempt, self._attempts, delay_s)
                await asyncio.sleep(delay_s)
        self.failed += 1
        log.error("alert webhook delivery failed (%s); message dropped", problem)
        return False

    async def _post(self, body: bytes) -> str | None:
        """Post once; return None on a 2xx response, else a short reason that does not contain the URL."""
        try:
            async with self._http.post(self._url, data=body, headers={"Content-Type": "application/json"},
                                       timeout=aiohttp.ClientTimeout(total=10)) as response:
                await response.read()
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return type(exc).__name__


class Alerts:
    """Keeps the set of active alerts and records each change once."""

    def __init__(self, client: redis.Redis, keys: Keys, webhook: WebhookNotifier | None = None) -> None:
        self._client = client
        self._keys = keys
        self._webhook = webhook
        self.active: dict[str, dict] = {}

    async def load(self) -> None:
        """Read the active alerts from Redis, as a previous leader left them."""
        raw = await self._client.hgetall(self._keys.alerts_active)
        self.active = {name.decode(): orjson.loads(value) for name, value in raw.items()}

    async def fire(self, name: str, severity: str, message: str, value: str = "", message_ja: str = "") -> None:
        """Raise `name` unless it is already active."""
        if name in self.active:
            return
        alert = {"name": name, "severity": severity, "message": message, "message_ja": message_ja, "value": value,
                 "fired_at_ms": int(time.time() * 1000)}
        self.active[name] = alert
        log.error("alert %s (%s): %s", name, severity, message)
        await self._store_active(name, alert)
        await self._record("firing", alert)

    async def resolve(self, name: str, message: str = "", message_ja: str = "") -> None:
        """Clear `name` if it is active."""
        alert = self.active.pop(name, None)
        if alert is None:
            return
        log.warning("alert %s resolved%s", name, f": {message}" if message else "")
        await self._store_active(name, None)
        await self._record("resolved", {"name": name, "severity": alert["severity"], "message": message,
                                        "message_ja": message_ja, "value": alert.get("value", ""),
                                        "fired_at_ms": alert.get("fired_at_ms", 0),
                                        "resolved_at_ms": int(time.time() * 1000)})

    async def event(self, name: str, severity: str, message: str, value: str = "", message_ja: str = "") -> None:
        """Record a one-off alert that has no resolved state (for example "conduit lost")."""
        log.error("alert %s (%s): %s", name, severity, message)
        await self._record("event", {"name": name, "severity": severity, "message": message, "message_ja": message_ja,
                                     "value": value, "fired_at_ms": int(time.time() * 1000)})

    async def _store_active(self, name: str, alert: dict | None) -> None:
        try:
            if alert is None:
                await self._client.hdel(self._keys.alerts_active, name)
            else:
                await self._client.hset(self._keys.alerts_active, name, orjson.dumps(alert))
        except (redis.exceptions.RedisError, OSError) as exc:
            log.error("could not store the state of alert %s in Redis: %s", name, exc)

    async def _record(self, state: str, alert: dict) -> None:
        if self._webhook is not None:
            self._webhook.send(webhook_text(state, alert))
        try:
            await self._client.xadd(self._keys.alerts, {k: str(v) for k, v in {"state": state, **alert}.items()},
                                    maxlen=ALERTS_MAXLEN, approximate=True)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.error("could not record alert %s in Redis: %s", alert.get("name"), exc)


async def read_alerts(client: redis.Redis, keys: Keys, recent: int = 50) -> dict:
    """Return the active alerts and the newest `recent` entries of the alert stream, newest first."""
    raw_active = await client.hgetall(keys.alerts_active)
    active = sorted((orjson.loads(value) for value in raw_active.values()), key=lambda a: -int(a.get("fired_at_ms", 0)))
    entries = []
    for entry_id, fields in await client.xrevrange(keys.alerts, count=recent):
        entry = {key.decode(): value.decode(errors="replace") for key, value in fields.items()}
        entry["id"] = entry_id.decode()
        entries.append(entry)
    return {"active": active, "recent": entries}
