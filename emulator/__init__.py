"""Local stand-in for Twitch: OAuth, Helix conduits and subscriptions, EventSub WebSocket.

It adds a load generator and fault-injection controls under ``/_emulator/``.
"""

from .app import create_app, serve
from .settings import EmulatorSettings

__all__ = ["EmulatorSettings", "create_app", "serve"]
