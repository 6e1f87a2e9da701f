"""A bare aiohttp EventSub client that keeps conduit shards bound, receives and decodes, and does nothing else.

It is the receive-side ceiling for the worker: the same aiohttp WebSocket client and the same
msgspec decoders as the worker (envelope, then notification payload), but no replay guard, no
publisher and no Redis. It binds its own sessions with Update Conduit Shards, 100 shards per call.

    python -m bench.bare --emulator URL --conduit-id ID --shards N --counter FILE
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
import msgspec

from common.local import DEV_CLIENT_ID, DEV_CLIENT_SECRET
from common.models import Envelope, NotificationPayload, SessionPayload
from .counter import CounterWriter

_envelope = msgspec.json.Decoder(Envelope)
_notification = msgspec.json.Decoder(NotificationPayload)
_session = msgspec.json.Decoder(SessionPayload)


async def open_session(http: aiohttp.ClientSession, ws_url: str) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """Open one socket and return it with the session id of its welcome."""
    ws = await http.ws_connect(ws_url, heartbeat=None, autoping=True, decode_text=False, max_msg_size=4 * 1024 * 1024)
    message = await ws.receive(timeout=10)
    envelope = _envelope.decode(message.data)
    if envelope.metadata.message_type != "session_welcome":
        raise RuntimeError(f"expected session_welcome, got {envelope.metadata.message_type}")
    return ws, _session.decode(envelope.payload).session.id


async def read(ws: aiohttp.ClientWebSocketResponse, counter: CounterWriter | None) -> None:
    async for message in ws:
        if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            continue
        envelope = _envelope.decode(message.data)
        if envelope.metadata.message_type == "notification":
            payload = _notification.decode(envelope.payload)
            if counter is not None and payload.subscription.type:
                counter.add()


async def bind(http: aiohttp.ClientSession, emulator: str, conduit_id: str, session_ids: list[str]) -> None:
    form = {"client_id": DEV_CLIENT_ID, "client_secret": DEV_CLIENT_SECRET, "grant_type": "client_credentials"}
    async with http.post(f"{emulator}/oauth2/token", data=form) as response:
        token = (await response.json())["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Client-Id": DEV_CLIENT_ID}
    for first in range(0, len(session_ids), 100):
        shards = [{"id": str(index), "transport": {"method": "websocket", "session_id": session_id}}
                  for index, session_id in enumerate(session_ids[first:first + 100], start=first)]
        async with http.patch(f"{emulator}/helix/eventsub/conduits/shards", headers=headers,
                              json={"conduit_id": conduit_id, "shards": shards}) as response:
            body = await response.json()
            if response.status != 202 or body.get("errors"):
                raise RuntimeError(f"Update Conduit Shards failed with {response.status}: {str(body)[:300]}")


async def main(args: argparse.Namespace) -> None:
    counter = CounterWriter(args.counter) if args.counter else None
    ws_url = args.emulator.replace("http://", "ws://") + "/ws?keepalive_timeout_seconds=10"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        limit = asyncio.Semaphore(50)

        async def opened(_: int):
            async with limit:
                return await open_session(http, ws_url)

        sockets = await asyncio.gather(*(opened(i) for i in range(args.shards)))
        await bind(http, args.emulator, args.conduit_id, [session_id for _, session_id in sockets])
        print(f"bound {len(sockets)} shards", flush=True)
        await asyncio.gather(*(read(ws, counter) for ws, _ in sockets))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulator", required=True, help="emulator base URL, http://127.0.0.1:PORT")
    parser.add_argument("--conduit-id", required=True)
    parser.add_argument("--shards", type=int, required=True, help="bind shards 0..N-1")
    parser.add_argument("--counter", type=str, default="", help="counter file shared with the benchmark")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
