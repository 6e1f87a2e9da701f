"""free_port() never returns a port twice, even when the OS offers one again before it is bound."""

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


def test_port_offered_again_is_skipped(monkeypatch) -> None:
    monkeypatch.setattr(local, "_handed_out", local.collections.deque(maxlen=16))
    monkeypatch.setattr(local.socket, "socket", _OfferedPorts([41000, 41000, 41000, 41001]))

    assert [local.free_port(), local.free_port()] == [41000, 41001]


def test_gives_up_with_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(local, "_handed_out", local.collections.deque([41000], maxlen=16))
    monkeypatch.setattr(local.socket, "socket", _OfferedPorts([41000] * 100))

    with pytest.raises(local.FleetError, match="no free loopback port"):
        local.free_port()


def test_real_ports_are_distinct_and_bindable() -> None:
    ports = [local.free_port() for _ in range(50)]

    assert len(set(ports)) == 50
    with socket.socket() as sock:
        sock.bind((local.LOOPBACK, ports[-1]))
