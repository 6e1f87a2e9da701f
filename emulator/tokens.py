"""OAuth tokens: app tokens, user tokens with refresh tokens, expiry, revocation."""

from __future__ import annotations

import logging
import secrets
import time

from .models import Token
from .settings import EmulatorSettings

logger = logging.getLogger(__name__)


class TokenStore:
    """Issued access tokens by value and user refresh tokens by value."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}

    def issue(self, client_id: str, user_id: str | None = None, scopes: tuple[str, ...] = ()) -> Token:
        """Issue an access token. A user token also gets a refresh token, since app tokens cannot be refreshed."""
        lifetime = self.settings.real_s(self.settings.token_expires_in_s)
        token = Token(secrets.token_hex(15), client_id, time.monotonic() + lifetime, user_id, scopes)
        if user_id is not None:
            token.refresh_token = secrets.token_hex(25)
            self.refresh_tokens[token.refresh_token] = token
        self.tokens[token.value] = token
        return token

    def find(self, value: str) -> Token | None:
        token = self.tokens.get(value)
        if token is None:
            return None
        if time.monotonic() >= token.expires_at:
            del self.tokens[value]
            return None
        return token

    def refresh(self, client_id: str, refresh_token: str) -> Token | None:
        """Issue a new user token for ``refresh_token`` and retire it. Return None for an unknown refresh token."""
        old = self.refresh_tokens.pop(refresh_token, None)
        if old is None or old.client_id != client_id:
            return None
        token = self.issue(client_id, old.user_id, old.scopes)
        logger.info("user token refreshed for user %s", old.user_id)
        return token

    def revoke(self, value: str) -> Token | None:
        """Remove an access token so that later calls with it get 401. Return it, or None when unknown."""
        token = self.tokens.pop(value, None)
        if token is not None and token.refresh_token is not None:
            self.refresh_tokens.pop(token.refresh_token, None)
        return token

    def remaining_twitch_s(self, token: Token) -> int:
        return max(0, int((token.expires_at - time.monotonic()) / self.settings.time_scale))

    def invalidate_app_tokens(self) -> int:
        app_values = [value for value, token in self.tokens.items() if token.is_app]
        for value in app_values:
            del self.tokens[value]
        logger.info("invalidated %d app tokens", len(app_values))
        return len(app_values)
