"""Channel files (CSV and JSON lines) and ChannelStore against the real Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as redis

from common.channels import ChannelError, ChannelStore, make_channel, parse_file
from common.keys import Keys
from common.models import Channel


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_parses_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.csv", (
        "broadcaster_user_id,login,display_name,types,transport_mode\n"
        "1001,alpha,Alpha,stream.online:1;channel.update:2,both\n"
        " 42 ,,,,\n"
    ))

    channels = parse_file(path)

    assert channels == [
        Channel("1001", login="alpha", display_name="Alpha", types=["stream.online:1", "channel.update:2"],
                transport_mode="both"),
        Channel("42"),
    ]


def test_csv_id_column_only(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.csv", "broadcaster_user_id\n7\n8\n")

    assert [channel.broadcaster_user_id for channel in parse_file(path)] == ["7", "8"]


def test_csv_bad_id_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.csv", "broadcaster_user_id,login\n1001,alpha\nabc,beta\n")

    with pytest.raises(ChannelError) as caught:
        parse_file(path)

    assert f"{path}:3:" in str(caught.value)
    assert "'abc'" in str(caught.value)


def test_csv_empty_id_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.csv", "broadcaster_user_id,login\n,alpha\n")

    with pytest.raises(ChannelError, match=r":2: invalid broadcaster id ''"):
        parse_file(path)


def test_csv_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.csv", "user_id,login\n1001,alpha\n")

    with pytest.raises(ChannelError) as caught:
        parse_file(path)

    assert str(path) in str(caught.value)
    assert "broadcaster_user_id" in str(caught.value)


def test_csv_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.csv", "")

    with pytest.raises(ChannelError, match="missing CSV header"):
        parse_file(path)


def test_csv_bad_mode_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.csv", "broadcaster_user_id,transport_mode\n1,conduit\n2,websocket\n3,pigeon\n")

    with pytest.raises(ChannelError) as caught:
        parse_file(path)

    assert f"{path}:4:" in str(caught.value)
    assert "'pigeon'" in str(caught.value)


def test_csv_bad_type_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.csv", "broadcaster_user_id,types\n1,stream.online\n")

    with pytest.raises(ChannelError, match=r":2: invalid event type 'stream.online'"):
        parse_file(path)


def test_csv_blank_line_error_line(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.csv", "broadcaster_user_id\n1001\n\nabc\n")

    with pytest.raises(ChannelError) as caught:
        parse_file(path)

    assert f"{path}:4:" in str(caught.value)


def test_jsonl_parses_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.jsonl", (
        '{"broadcaster_user_id": "1001", "login": "alpha", "types": ["stream.online:1"]}\n'
        "\n"
        '{"broadcaster_user_id": 42, "types": "stream.offline:1,channel.update:2", "transport_mode": "websocket"}\n'
    ))

    channels = parse_file(path)

    assert channels == [
        Channel("1001", login="alpha", types=["stream.online:1"]),
        Channel("42", types=["stream.offline:1", "channel.update:2"], transport_mode="websocket"),
    ]


def test_jsonl_detected_by_content(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.txt", '{"broadcaster_user_id": "5"}\n')

    assert parse_file(path) == [Channel("5")]


def test_jsonl_bad_id_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.jsonl", '{"broadcaster_user_id": "1"}\n\n{"broadcaster_user_id": "x9"}\n')

    with pytest.raises(ChannelError) as caught:
        parse_file(path)

    assert f"{path}:3:" in str(caught.value)
    assert "'x9'" in str(caught.value)


def test_jsonl_missing_id_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.jsonl", '{"broadcaster_user_id": "1"}\n{"login": "beta"}\n')

    with pytest.raises(ChannelError) as caught:
        parse_file(path)

    assert f"{path}:2:" in str(caught.value)
    assert "broadcaster_user_id" in str(caught.value)


def test_jsonl_bad_mode_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "channels.jsonl", '{"broadcaster_user_id": "1", "transport_mode": "pigeon"}\n')

    with pytest.raises(ChannelError) as caught:
        parse_file(path)

    assert f"{path}:1:" in str(caught.value)
    assert "'pigeon'" in str(caught.value)


@pytest.mark.parametrize("line", ["{not json", "[1, 2]", '"1001"'])
def test_jsonl_malformed_line(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, "channels.jsonl", '{"broadcaster_user_id": "1"}\n' + line + "\n")

    with pytest.raises(ChannelError, match=r":2: invalid channel line"):
        parse_file(path)


def test_make_channel_rejects_bad_id() -> None:
    with pytest.raises(ChannelError, match="numeric Twitch user id"):
        make_channel("12a")


@pytest.fixture
def store(redis_client: redis.Redis) -> ChannelStore:
    return ChannelStore(redis_client, Keys("cf:"))


async def test_store_add_twice_once(store: ChannelStore, redis_client: redis.Redis) -> None:
    channel = make_channel("1001", login="alpha")

    first = await store.add([channel])
    second = await store.add([channel])

    assert first == 1
    assert second == 1
    assert await redis_client.hlen("cf:channels") == 1
    assert await store.list() == [channel]


async def test_store_add_duplicate_in_batch(store: ChannelStore, redis_client: redis.Redis) -> None:
    added = await store.add([make_channel("5"), make_channel("5", login="later")])

    assert added == 1
    assert await store.list() == [Channel("5", login="later")]


async def test_store_add_empty(store: ChannelStore, redis_client: redis.Redis) -> None:
    assert await store.add([]) == 0
    assert await redis_client.exists("cf:channels") == 0


async def test_store_add_over_1000(store: ChannelStore, redis_client: redis.Redis) -> None:
    added = await store.add(make_channel(str(i)) for i in range(2500))

    assert added == 2500
    assert await redis_client.hlen("cf:channels") == 2500


async def test_store_remove(store: ChannelStore) -> None:
    await store.add([make_channel("1"), make_channel("2"), make_channel("3")])

    removed = await store.remove(["2", "404"])

    assert removed == 1
    assert [channel.broadcaster_user_id for channel in await store.list()] == ["1", "3"]


async def test_store_remove_nothing(store: ChannelStore) -> None:
    assert await store.remove([]) == 0


async def test_store_list_sorted_numerically(store: ChannelStore) -> None:
    await store.add([make_channel(i) for i in ("100", "9", "10", "1000", "2")])

    listed = await store.list()

    assert [channel.broadcaster_user_id for channel in listed] == ["2", "9", "10", "100", "1000"]


async def test_store_add_publishes_change(store: ChannelStore, redis_client: redis.Redis) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe("cf:channels:changed")
    await pubsub.get_message(timeout=1.0)

    await store.add([make_channel("1")])

    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
    await pubsub.aclose()
    assert message is not None
    assert message["data"] == b"changed"
