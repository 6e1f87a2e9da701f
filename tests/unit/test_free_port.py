"""free_port(): a port below the ephemeral range, never the same one twice."""

from __future__ import annotations

import socket

import pytest

from common import local


class _OfferedPorts:
    """Stands in for socket.socket: each bind to port 0 gets the next port from `offers`."""

    def __init__(self, offers: list[int]) -> None:
        self.offers = offers

    def __call__(self, *args, **kwargs) -> _OfferedPorts:
        return self

    def __enter__(self) -> _OfferedPorts:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        assert address == (local.LOOPBACK, 0)

    def getsockname(self) -> tuple[str, int]:
        return local.LOOPBACK, self.offers.pop(0)


@pytest.fixture
def fresh_history(monkeypatch) -> None:
    monkeypatch.setattr(local, "_handed_out", local.collections.deque(maxlen=16))


def test_port_below_ephemeral_range(fresh_history, monkeypatch, tmp_path) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("32768\t60999\n")
    monkeypatch.setattr(local, "_EPHEMERAL_RANGE_FILE", range_file)

    ports = [local.free_port() for _ in range(50)]

    assert all(22_768 <= port < 32_768 for port in ports)
    assert len(set(ports)) == 50
    with socket.socket() as sock:
        sock.bind((local.LOOPBACK, ports[-1]))


def test_os_port_without_room_below_range(fresh_history, monkeypatch, tmp_path) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("1024 65535\n")
    monkeypatch.setattr(local, "_EPHEMERAL_RANGE_FILE", range_file)
    monkeypatch.setattr(local.socket, "socket", _OfferedPorts([41000, 41000, 41000, 41001]))

    # The OS may offer a port again before anything binds it, and free_port() skips it.
    assert [local.free_port(), local.free_port()] == [41000, 41001]


def test_gives_up_after_100_tries(monkeypatch) -> None:
    monkeypatch.setattr(local, "_handed_out", local.collections.deque([41000], maxlen=16))
    monkeypatch.setattr(local, "_ports_below_ephemeral", lambda: None)
    monkeypatch.setattr(local.socket, "socket", _OfferedPorts([41000] * 100))

    with pytest.raises(local.FleetError, match="no free loopback port"):
        local.free_port()
