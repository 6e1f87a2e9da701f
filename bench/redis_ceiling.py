"""The Redis side of the worker path alone: pre-built events through `PUBLISH_EVENTS`, pipelined.

Each round trip carries one script call per partition with up to `--batch` events each, as the
worker's publisher does (CF_PUBLISH_BATCH_MAX=500, 4 partitions). The events carry the stream
entry fields of the worker with an `event` of `--event-bytes` bytes and a fresh message_id each.
Prints one JSON line: events, elapsed_s, cpu_s (this process).

    python -m bench.redis_ceiling --port P --count N [--event-bytes 1000]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import redis

from common.keys import PUBLISH_EVENTS, Keys
from shard_worker.publisher import ENTRY_FIELDS

PARTITIONS = 4


def build_values(message_id: str, event: bytes, partition: int) -> list:
    return [message_id, "notification", "channel.chat.message", "1", "2026-01-01T00:00:00.123456Z",
            int(time.time() * 1000), "conduit", str(partition), "sub-1", str(1000 + partition), event]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--event-bytes", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--prefix", default="bench:ceiling:")
    parser.add_argument("--maxlen", type=int, default=100_000)
    args = parser.parse_args()

    client = redis.Redis(host="127.0.0.1", port=args.port)
    script = client.register_script(PUBLISH_EVENTS)
    keys = Keys(args.prefix)
    event = json.dumps({"text": "x" * args.event_bytes}).encode()[:args.event_bytes]
    run = uuid.uuid4().hex[:12]
    width = 2 + 2 * len(ENTRY_FIELDS)

    started, cpu_started = time.perf_counter(), time.process_time()
    sent = 0
    while sent < args.count:
        pipe = client.pipeline(transaction=False)
        for partition in range(PARTITIONS):
            size = min(args.batch, args.count - sent)
            if size <= 0:
                break
            call_keys = [keys.events(partition), keys.counters(partition), keys.compare_stream(partition)]
            call_args: list = [900, args.maxlen, width, 1000]
            for index in range(sent, sent + size):
                message_id = f"{run}-{index}"
                call_keys.append(keys.dedup(partition, message_id))
                call_args += ["", ""]  # the default dedup ttl, no comparison note
                for name, value in zip(ENTRY_FIELDS, build_values(message_id, event, partition)):
                    call_args.append(name)
                    call_args.append(value)
            script(keys=call_keys, args=call_args, client=pipe)
            sent += size
        pipe.execute()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"events": sent, "elapsed_s": elapsed, "cpu_s": cpu}), flush=True)


if __name__ == "__main__":
    main()
