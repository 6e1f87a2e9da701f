"""Redis clients built from settings, and the fleet's Lua scripts registered on them."""

from __future__ import annotations

import redis.asyncio as redis
from arq.connections import ArqRedis

from . import keys as key_module
from .settings import Settings


# redis-py 6 and later cap a pool at 100 connections by default; a worker starting a thousand
# shards, or a leader answering as many bind jobs, needs more at once.
MAX_CONNECTIONS = 1000


def control_redis(settings: Settings) -> redis.Redis:
    """Return a client for the control Redis (leases, assignments, arq)."""
    return redis.Redis.from_url(settings.redis_url, health_check_interval=30, socket_connect_timeout=5,
                                max_connections=MAX_CONNECTIONS)


def events_redis(settings: Settings) -> redis.Redis:
    """Return a client for the event Redis (streams, dedup claims); may be the control Redis."""
    return redis.Redis.from_url(settings.events_url, health_check_interval=30, socket_connect_timeout=5,
                                max_connections=MAX_CONNECTIONS)


def arq_redis(settings: Settings, queue_name: str) -> ArqRedis:
    """Return an arq client on the control Redis with the same connection cap."""
    client = ArqRedis.from_url(settings.redis_url, health_check_interval=30, socket_connect_timeout=5,
                               max_connections=MAX_CONNECTIONS)
    client.default_queue_name = queue_name  # from_url() passes keyword arguments to the pool only
    return client


class Scripts:
    """The Lua scripts of `common.keys`, registered once on a client (EVALSHA with a fallback)."""

    def __init__(self, client: redis.Redis) -> None:
        self.publish_events = client.register_script(key_module.PUBLISH_EVENTS)
        self.acquire_leader = client.register_script(key_module.ACQUIRE_LEADER)
        self.renew_leader = client.register_script(key_module.RENEW_LEADER)
        self.release_leader = client.register_script(key_module.RELEASE_LEADER)
        self.fenced_hash_update = client.register_script(key_module.FENCED_HASH_UPDATE)
