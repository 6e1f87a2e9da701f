"""Shared parts of conduit-fleet: settings, Twitch wire types, Helix client, token manager, Redis keys."""

from .errors import (
    Conflict, ConduitNotFound, FleetError, HelixError, LimitReached, RateLimited, RedisUnavailable,
    ServerError, SettingsError, TokenError, Unauthorized,
)
from .helix import HelixClient
from .keys import Keys, partition_of
from .settings import Settings
from .token import AppTokenManager

__all__ = [
    "AppTokenManager", "Conflict", "ConduitNotFound", "FleetError", "HelixClient", "HelixError", "Keys",
    "LimitReached", "RateLimited", "RedisUnavailable", "ServerError", "Settings", "SettingsError",
    "TokenError", "Unauthorized", "partition_of",
]
