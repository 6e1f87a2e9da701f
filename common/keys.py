"""Every Redis key name and Lua script the fleet uses, in one place.

Event streams, their dedup claims and their counters carry the partition in a hash tag (`{3}`), so a
partition's keys share one Redis Cluster slot and one Lua script may touch all of them.
"""

from __future__ import annotations

import zlib


class Keys:
    """Redis key names under one prefix (default `cf:`)."""

    def __init__(self, prefix: str = "cf:") -> None:
        self.prefix = prefix
        self.leader = f"{prefix}leader"
        self.leader_epoch = f"{prefix}leader:epoch"
        self.token = f"{prefix}token:app"
        self.token_lock = f"{prefix}token:lock"
        self.conduit = f"{prefix}conduit"
        self.workers = f"{prefix}workers"
        self.assignment = f"{prefix}assignment"
        self.shards = f"{prefix}shards"
        self.channels = f"{prefix}channels"
        self.subscriptions = f"{prefix}subscriptions"
        self.stats = f"{prefix}stats"
        self.alerts = f"{prefix}alerts"
        self.alerts_active = f"{prefix}alerts:active"
        self.history = f"{prefix}history"
        self.arq_queue = f"{prefix}arq:queue"
        self.assignment_channel = f"{prefix}assignment:changed"
        self.channels_channel = f"{prefix}channels:changed"
        self.workers_channel = f"{prefix}workers:changed"
        self.shard_disabled_channel = f"{prefix}shard-disabled"
        self.resize_channel = f"{prefix}conduit:resize"
        self.ratelimit = f"{prefix}ratelimit"
        self.user_ratelimit = f"{prefix}ratelimit:user"
        self.reconcile = f"{prefix}reconcile"
        self.entry_states = f"{prefix}subscription-states"
        self.user_token = f"{prefix}token:user"
        self.user_token_lock = f"{prefix}token:user:lock"
        # Legacy WebSocket mode and the migration (docs/migration.md).
        self.legacy_slots = f"{prefix}legacy:slots"
        self.legacy_load = f"{prefix}legacy:load"
        self.legacy_assignment = f"{prefix}legacy:assignment"
        self.legacy_connections = f"{prefix}legacy:connections"
        self.identity_dedup = f"{prefix}dedup-identity"
        self.compare = f"{prefix}compare"
        self.migration = f"{prefix}migration"
        self.migration_channel = f"{prefix}migration:changed"
        self.migration_commands = f"{prefix}migration:commands"

    def migration_result(self, command_id: str) -> str:
        return f"{self.prefix}migration:result:{command_id}"

    def disconnects(self, transport: str) -> str:
        """Sorted set of unexpected socket losses of one transport (`conduit` or `websocket`), scored by ms."""
        return f"{self.prefix}disconnects:{transport}"

    def compare_stream(self, partition: int) -> str:
        """Copies of events of channels in the parallel run, for the comparison of the two transports."""
        return f"{self.prefix}compare:{{{partition}}}"

    def worker_info(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def bind_results_channel(self, worker_id: str) -> str:
        return f"{self.prefix}bind-results:{worker_id}"

    def worker_commands_channel(self, worker_id: str) -> str:
        return f"{self.prefix}worker-commands:{worker_id}"

    def events(self, partition: int) -> str:
        return f"{self.prefix}events:{{{partition}}}"

    def dedup(self, partition: int, dedup_id: str) -> str:
        return f"{self.prefix}dedup:{{{partition}}}:{dedup_id}"

    def counters(self, partition: int) -> str:
        return f"{self.prefix}counters:{{{partition}}}"


def partition_of(broadcaster_id: str, partitions: int) -> int:
    """Return the stream partition of a broadcaster: a stable hash, the same in every process."""
    return zlib.crc32(broadcaster_id.encode()) % partitions


# KEYS: stream, counters, comparison stream, then one dedup key per event.
# ARGV: default dedup ttl (s), stream maxlen, values per event, comparison stream maxlen, then per event
# its dedup ttl ('' for the default), its comparison note ('' or "transport|latency_ms|identity") and
# its field/value pairs.
# The claim and the XADD run in one script, so a crash can neither publish an event twice nor
# claim it without publishing it. An event with a note (a channel in the parallel run) also leaves
# one entry per copy in the comparison stream, published or not.
PUBLISH_EVENTS = """
local default_ttl = ARGV[1]
local maxlen = ARGV[2]
local width = tonumber(ARGV[3])
local compare_maxlen = ARGV[4]
local published, duplicates = 0, 0
for i = 4, #KEYS do
  local ttl_at = 5 + (i - 4) * width
  local ttl = ARGV[ttl_at]
  if ttl == '' then ttl = default_ttl end
  local note = ARGV[ttl_at + 1]
  local first = ttl_at + 2
  local fresh = redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl)
  if fresh then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, first, first + width - 3))
    published = published + 1
  else
    duplicates = duplicates + 1
  end
  if note ~= '' then
    local transport, latency, identity = string.match(note, '^([^|]*)|([^|]*)|(.*)$')
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', compare_maxlen, '*', 'i', identity, 't', transport,
               'l', latency, 'f', fresh and '1' or '0')
    if not fresh then redis.call('HINCRBY', KEYS[2], 'duplicates_' .. transport, 1) end
  end
end
if published > 0 then redis.call('HINCRBY', KEYS[2], 'published', published) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[2], 'duplicates', duplicates) end
return {published, duplicates}
"""

# KEYS: leader, epoch. ARGV: owner id, lease (ms). Returns the new epoch, or 0 when another owns it.
ACQUIRE_LEADER = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
"""

# KEYS: leader, epoch. ARGV: owner id, lease (ms), epoch. Returns 1 when renewed, 0 when lost.
RENEW_LEADER = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: leader, epoch. ARGV: owner id, epoch. Deletes the lease only if it is still ours.
RELEASE_LEADER = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: epoch, hash. ARGV: epoch, pub/sub channel ('' for none), count of field/value pairs to
# set, the pairs, then the fields to delete.
# A deposed leader's epoch no longer matches, so its writes are rejected with an error.
FENCED_HASH_UPDATE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('STALE_EPOCH current epoch is ' .. tostring(redis.call('GET', KEYS[1])))
end
local pairs_count = tonumber(ARGV[3])
local last_pair = 3 + pairs_count * 2
-- unpack() is limited to a few thousand values, so large updates go in chunks.
for first = 4, last_pair, 2000 do
  redis.call('HSET', KEYS[2], unpack(ARGV, first, math.min(first + 1999, last_pair)))
end
for first = last_pair + 1, #ARGV, 2000 do
  redis.call('HDEL', KEYS[2], unpack(ARGV, first, math.min(first + 1999, #ARGV)))
end
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[1]) end
return pairs_count
"""

# The fleet's shared Helix rate budget, a token bucket in the hash KEYS[1] with the fields `limit`
# (points per Twitch minute), `tokens`, `updated_ms`, `acquired` and `observed`. Time comes from
# Redis TIME, so every process refills the same bucket with the same clock.
_BUCKET_REFILL = """
local now_parts = redis.call('TIME')
local now_ms = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local stored = redis.call('HMGET', KEYS[1], 'limit', 'tokens', 'updated_ms', 'acquired', 'observed')
local limit = tonumber(stored[1]) or tonumber(ARGV[1])
local tokens = tonumber(stored[2]) or 0
local updated_ms = tonumber(stored[3]) or now_ms
local acquired = tonumber(stored[4]) or 0
local observed = tonumber(stored[5]) or 0
local per_ms = limit / tonumber(ARGV[2])
tokens = math.min(limit, tokens + math.max(0, now_ms - updated_ms) * per_ms)
"""

# ARGV: default limit, real ms per Twitch minute, points.
# Reserves the points at once, so the bucket may go below 0, and returns the ms the caller must
# wait before sending (callers queue in order instead of polling) and the count of responses
# observed so far, which the caller passes back with its own response.
RATE_ACQUIRE = _BUCKET_REFILL + """
local points = tonumber(ARGV[3])
tokens = tokens - points
local wait_ms = 0
if tokens < 0 then wait_ms = math.ceil(-tokens / per_ms) end
redis.call('HSET', KEYS[1], 'limit', limit, 'tokens', tostring(tokens), 'updated_ms', now_ms,
           'acquired', acquired + points)
return {wait_ms, observed}
"""

# ARGV: default limit, real ms per Twitch minute, header limit ('' when absent), header remaining
# ('' when the call got no response), header reset (Unix s), safety margin (points), 1 for a real 429,
# the responses observed when this call reserved its point ('' when unknown).
# The server's `remaining` caps the bucket (minus the margin). It also raises a bucket that fell
# behind, but only to what is left after the calls that `remaining` may not count yet: those
# without a response when this call reserved its point, and those reserved since. A response
# observed late, after newer ones, then cannot raise the bucket above what Twitch has left.
RATE_OBSERVE = _BUCKET_REFILL + """
observed = observed + 1
if ARGV[3] ~= '' then limit = tonumber(ARGV[3]) end
if ARGV[4] ~= '' then
  local ceiling = tonumber(ARGV[4]) - tonumber(ARGV[6])
  local in_flight = math.max(0, acquired - observed)
  if ARGV[8] ~= '' then in_flight = math.max(in_flight, acquired - tonumber(ARGV[8]) - 1) end
  if tokens > ceiling then
    tokens = ceiling
  elseif tokens < ceiling - in_flight then
    tokens = ceiling - in_flight
  end
  redis.call('HSET', KEYS[1], 'remaining', ARGV[4], 'reset_at_s', ARGV[5], 'observed_at_ms', now_ms)
end
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[1], 'throttled', 1) end
redis.call('HSET', KEYS[1], 'limit', limit, 'tokens', tostring(tokens), 'updated_ms', now_ms, 'observed', observed)
return 1
"""
