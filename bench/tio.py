"""TwitchIO 3.x as a conduit client of the emulator, for comparison with the shard worker.

Modes:
- `hold`: hold the shards and ignore events (memory, bind latency).
- `empty`: an empty `event_message` handler that only counts.
- `redis`: the handler a TwitchIO user would write for the worker's result: `SET NX EX` on the
  EventSub message_id, then `XADD` of the event, each awaited, per event.

TwitchIO is pointed at the emulator through `Route.BASE`, `Route.ID_BASE` and the EventSub `WSS`
URL, as in tests/emulator/test_twitchio.py. The emulator needs `query_fields_as_body` for it.

    python -m bench.tio --emulator URL --conduit-id ID|new --shards N --mode MODE [--counter FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time

import redis.asyncio as redis
import twitchio
from twitchio.eventsub import websockets as tio_websockets
from twitchio.http import Route

from common.local import DEV_CLIENT_ID, DEV_CLIENT_SECRET
from .counter import CounterWriter

DEDUP_TTL_S = 900
STREAM_MAXLEN = 100_000
# A task per event runs the handler, so without a cap a burst would open one connection per event.
REDIS_MAX_CONNECTIONS = 64


class Receiver(twitchio.AutoClient):
    def __init__(self, args: argparse.Namespace) -> None:
        conduit_id: str | bool = True if args.conduit_id == "new" else args.conduit_id
        super().__init__(client_id=DEV_CLIENT_ID, client_secret=DEV_CLIENT_SECRET, conduit_id=conduit_id,
                         shard_ids=list(range(args.shards)))
        self.mode = args.mode
        self.counter = CounterWriter(args.counter) if args.counter else None
        self.redis: redis.Redis | None = None
        if args.mode == "redis":
            pool = redis.BlockingConnectionPool(host="127.0.0.1", port=args.redis_port,
                                                max_connections=REDIS_MAX_CONNECTIONS, timeout=None)
            self.redis = redis.Redis(connection_pool=pool)

    async def event_message(self, payload: twitchio.ChatMessage) -> None:
        if self.mode == "redis":
            await self._publish(payload)
        if self.counter is not None:
            self.counter.add()

    async def _publish(self, payload: twitchio.ChatMessage) -> None:
        metadata = payload.metadata
        if not await self.redis.set(f"tio:dedup:{metadata.message_id}", 1, nx=True, ex=DEDUP_TTL_S):
            return
        event = {
            "message_id": payload.id,
            "broadcaster_user_id": payload.broadcaster.id,
            "chatter_user_id": payload.chatter.id,
            "chatter_user_login": payload.chatter.name,
            "text": payload.text,
            "color": str(payload.colour) if payload.colour else None,
        }
        await self.redis.xadd("tio:events", {
            "message_id": metadata.message_id,
            "type": metadata.subscription_type,
            "message_timestamp": metadata.message_timestamp.isoformat(),
            "received_at_ms": int(time.time() * 1000),
            "broadcaster_user_id": payload.broadcaster.id,
            "event": json.dumps(event),
        }, maxlen=STREAM_MAXLEN, approximate=True)


async def main(args: argparse.Namespace) -> None:
    Route.BASE = f"{args.emulator}/helix/"
    Route.ID_BASE = f"{args.emulator}/"
    tio_websockets.WSS = args.emulator.replace("http://", "ws://") + "/ws"
    logging.basicConfig(level=logging.WARNING)
    client = Receiver(args)
    try:
        await client.login(load_tokens=False, save_tokens=False)
        print(f"associated {args.shards} shards", flush=True)
        await asyncio.Event().wait()
    finally:
        await client.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulator", required=True, help="emulator base URL, http://127.0.0.1:PORT")
    parser.add_argument("--conduit-id", required=True, help="conduit to take over, or 'new' to create one")
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--mode", choices=("hold", "empty", "redis"), required=True)
    parser.add_argument("--counter", default="", help="counter file shared with the benchmark")
    parser.add_argument("--redis-port", type=int, default=0)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
