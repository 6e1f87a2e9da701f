"""Event identity: the dedup key of the parallel run, the same for both transports' copies."""

from __future__ import annotations

import orjson

from common.identity import event_identity, is_content_hash, timestamp_ms


def test_identity_uses_per_type_id():
    chat = orjson.dumps({"message_id": "abc-1", "broadcaster_user_id": "1", "message": {"text": "草"}})
    assert event_identity("channel.chat.message", "1", chat, "1") == "channel.chat.message:1:abc-1"
    online = orjson.dumps({"id": "9001", "broadcaster_user_id": "1", "type": "live"})
    assert event_identity("stream.online", "1", online, "1") == "stream.online:1:9001"
    assert event_identity("stream.online", "1", online, "2") != event_identity("stream.online", "1", online, "1")


def test_hash_ignores_key_order_and_whitespace():
    first = b'{"user_id": "5", "broadcaster_user_id": "1", "followed_at": "2026-12-04T10:00:00Z"}'
    second = b'{"followed_at":"2026-12-04T10:00:00Z","broadcaster_user_id":"1","user_id":"5"}'
    assert event_identity("channel.follow", "2", first) == event_identity("channel.follow", "2", second)


def test_hash_separates_type_version_and_content():
    event = b'{"broadcaster_user_id":"1"}'
    keys = {
        event_identity("stream.offline", "1", event),
        event_identity("stream.offline", "2", event),
        event_identity("channel.update", "1", event),
        event_identity("stream.offline", "1", b'{"broadcaster_user_id":"2"}'),
    }
    assert len(keys) == 4


def test_identity_empty_id_hashed():
    event = b'{"id":"","broadcaster_user_id":"1"}'
    assert event_identity("stream.online", "1", event).startswith("stream.online:h:")


def test_undecodable_event_still_gets_a_stable_identity():
    assert event_identity("stream.online", "1", b"{broken") == event_identity("stream.online", "1", b"{broken")


def test_timestamp_ms_reads_nanosecond_rfc3339():
    assert timestamp_ms("1970-01-01T00:00:01.123456789Z") == 1123
    assert timestamp_ms("1970-01-01T00:00:02Z") == 2000
    assert timestamp_ms("not a time") is None
    assert timestamp_ms("2026-12-04T10:00:00+09:00") is None


def test_content_hash_is_told_apart_from_ids():
    assert is_content_hash(event_identity("stream.offline", "1", b'{"broadcaster_user_id":"1"}', "1"))
    assert not is_content_hash(event_identity("stream.online", "1", b'{"id":"77"}', "1"))
