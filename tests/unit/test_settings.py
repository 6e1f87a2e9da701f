"""Settings.from_env: defaults, conversion, validation, the README table and redaction."""

from __future__ import annotations

import dataclasses

import pytest

from common.errors import SettingsError
from common.settings import Settings, parse_event_types, settings_table


def test_defaults_point_at_twitch() -> None:
    settings = Settings.from_env({})

    assert settings.helix_url == "https://api.twitch.tv/helix"
    assert settings.oauth_url == "https://id.twitch.tv/oauth2"
    assert settings.eventsub_ws_url == "wss://eventsub.wss.twitch.tv/ws"


def test_defaults_other_values() -> None:
    settings = Settings.from_env({})

    assert settings.shard_count == 10
    assert settings.keepalive_timeout_s == 10
    assert settings.key_prefix == "cf:"
    assert settings.client_id == ""
    assert settings.client_secret == ""
    assert settings.event_types == [("stream.online", "1"), ("stream.offline", "1"), ("channel.update", "2")]


def test_from_env_converts_types() -> None:
    environ = {"CF_SHARD_COUNT": "250", "CF_KEEPALIVE_GRACE": "2.5", "CF_LOG_FORMAT": "json", "TWITCH_CLIENT_ID": "abc"}

    settings = Settings.from_env(environ)

    assert settings.shard_count == 250
    assert settings.keepalive_grace == 2.5
    assert settings.log_format == "json"
    assert settings.client_id == "abc"


def test_from_env_override_beats_environ() -> None:
    settings = Settings.from_env({"CF_SHARD_COUNT": "7"}, shard_count=9)

    assert settings.shard_count == 9


def test_from_env_ignores_unknown_variables() -> None:
    settings = Settings.from_env({"CF_NO_SUCH_SETTING": "x"})

    assert settings == Settings.from_env({})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CF_SHARD_COUNT", "ten"),
        ("CF_SHARD_COUNT", "1.5"),
        ("CF_SHARD_COUNT", ""),
        ("CF_KEEPALIVE_TIMEOUT_S", "abc"),
        ("CF_KEEPALIVE_GRACE", "fast"),
        ("CF_WORKER_LEASE_S", "10s"),
    ],
)
def test_non_numeric_value_rejected(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})

    assert variable in str(caught.value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("value", ["0", "-1", "20001"])
def test_shard_count_out_of_range(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CF_SHARD_COUNT": value})

    assert f"CF_SHARD_COUNT={int(value)!r}" in str(caught.value)
    assert "1 to 20000" in str(caught.value)


@pytest.mark.parametrize("value", ["1", "20000"])
def test_shard_count_bounds_accepted(value: str) -> None:
    assert Settings.from_env({"CF_SHARD_COUNT": value}).shard_count == int(value)


@pytest.mark.parametrize("value", ["9", "601", "0"])
def test_keepalive_out_of_range(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CF_KEEPALIVE_TIMEOUT_S": value})

    assert f"CF_KEEPALIVE_TIMEOUT_S={int(value)!r}" in str(caught.value)
    assert "10 to 600" in str(caught.value)


@pytest.mark.parametrize("value", ["10", "600"])
def test_keepalive_bounds_accepted(value: str) -> None:
    assert Settings.from_env({"CF_KEEPALIVE_TIMEOUT_S": value}).keepalive_timeout_s == int(value)


@pytest.mark.parametrize("value", ["xml", "", "JSON"])
def test_log_format_invalid(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CF_LOG_FORMAT": value})

    assert f"CF_LOG_FORMAT={value!r}" in str(caught.value)


@pytest.mark.parametrize("value", ["stream.online", "stream.online:", ":1", "", " , "])
def test_event_types_invalid(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CF_DEFAULT_EVENT_TYPES": value})

    assert f"CF_DEFAULT_EVENT_TYPES={value!r}" in str(caught.value)


@pytest.mark.parametrize(
    ("lease", "heartbeat"),
    [("2", "2"), ("1", "2"), ("1.9", "2.0")],
)
def test_worker_lease_not_longer_rejected(lease: str, heartbeat: str) -> None:
    environ = {"CF_WORKER_LEASE_S": lease, "CF_WORKER_HEARTBEAT_S": heartbeat}

    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ)

    assert f"CF_WORKER_LEASE_S={float(lease)!r}" in str(caught.value)
    assert "CF_WORKER_HEARTBEAT_S" in str(caught.value)


def test_worker_lease_longer_accepted() -> None:
    settings = Settings.from_env({"CF_WORKER_LEASE_S": "2.1", "CF_WORKER_HEARTBEAT_S": "2"})

    assert settings.worker_lease_s == 2.1


def test_leader_lease_not_longer_rejected() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CF_LEADER_LEASE_S": "3", "CF_LEADER_RENEW_S": "3"})

    assert "CF_LEADER_LEASE_S=3.0" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CF_REDIS_URL", "127.0.0.1:6379"),
        ("CF_HELIX_URL", "ftp://127.0.0.1/helix"),
        ("CF_TIME_SCALE", "0"),
        ("CF_TIME_SCALE", "nan"),
        ("CF_BIND_BATCH_WINDOW_MS", "-1"),
        ("CF_METRICS_PORT", "-2"),
        ("CF_STREAM_PARTITIONS", "0"),
    ],
)
def test_other_invalid_values(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})

    assert variable in str(caught.value)


def test_settings_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        Settings.from_env({"CF_SHARD_COUNT": "0"})


def test_http_port_above_65535_rejected() -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({"CF_HTTP_PORT": "70000"})


def test_metrics_port_above_65535_rejected() -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({"CF_METRICS_PORT": "70000"})


def test_replace_validates() -> None:
    settings = Settings.from_env({})

    with pytest.raises(SettingsError):
        settings.replace(keepalive_timeout_s=5)


def test_parse_event_types_pairs() -> None:
    pairs = parse_event_types(" stream.online:1 , channel.update : 2 ,,")

    assert pairs == [("stream.online", "1"), ("channel.update", "2")]


def test_parse_event_types_empty() -> None:
    assert parse_event_types("") == []


@pytest.mark.parametrize("text", ["stream.online", "stream.online:", ":1", "a:1,b"])
def test_parse_event_types_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="expected 'type:version'"):
        parse_event_types(text)


def test_settings_table_rows() -> None:
    lines = settings_table().splitlines()

    assert lines[0] == "| variable | default | meaning |"
    assert lines[1] == "|---|---|---|"
    assert len(lines) == 2 + len(dataclasses.fields(Settings))


def test_settings_table_contents() -> None:
    table = settings_table()

    assert "| `CF_SHARD_COUNT` | `10` | Shard count of a newly created conduit. |" in table
    assert "| `TWITCH_CLIENT_SECRET` | `(empty)` |" in table
    assert "`https://api.twitch.tv/helix`" in table


def test_redacted_hides_secrets() -> None:
    settings = Settings.from_env({"TWITCH_CLIENT_ID": "app-id", "TWITCH_CLIENT_SECRET": "s3cret", "CF_API_TOKEN": "tok-123"})

    redacted = settings.redacted()

    assert redacted["client_secret"] == "***"
    assert redacted["api_token"] == "***"
    assert redacted["client_id"] == "app-id"
    assert "s3cret" not in repr(redacted)
    assert "tok-123" not in repr(redacted)


def test_redacted_keeps_empty_secrets() -> None:
    redacted = Settings.from_env({}).redacted()

    assert redacted["client_secret"] == ""
    assert redacted["api_token"] == ""


def test_redacted_leaves_settings_unchanged() -> None:
    settings = Settings.from_env({"TWITCH_CLIENT_SECRET": "s3cret"})

    settings.redacted()

    assert settings.client_secret == "s3cret"


def test_scaled_multiplies_time_scale() -> None:
    settings = Settings.from_env({"CF_TIME_SCALE": "0.1"})

    assert settings.scaled(10.0) == pytest.approx(1.0)
