"""The shard worker: holds EventSub WebSocket sessions for conduit shards and publishes their events."""

from .publisher import ENTRY_FIELDS, Publisher
from .session import ShardSession
from .worker import ShardWorker, run_worker

__all__ = ["ENTRY_FIELDS", "Publisher", "ShardSession", "ShardWorker", "run_worker"]
