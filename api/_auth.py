"""Who may call what: the signing key as a bearer token on `/v1`, a signed session cookie (or a
trusted proxy's header) for the dashboard, event keys on `/e/{key}`. Keys are compared in
constant time; with no keys configured everything is open, as in dev."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from starlette.requests import HTTPConnection
from tideflow._settings import Settings

SESSION_COOKIE = "tideflow_session"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class Auth:
    def __init__(self, settings: Settings) -> None:
        self._signing_key = settings.signing_key
        self._event_keys = settings.event_keys
        self.proxy_header = settings.auth_proxy_header
        self.session_ttl_s = settings.session_ttl_s
        self.metrics_closed = settings.metrics_auth

    @property
    def is_open(self) -> bool:
        return self._signing_key is None

    def is_event_key(self, key: str) -> bool:
        if not self._event_keys:
            return True
        # Every key is compared, so the time taken does not tell which one came close.
        matches = [_same(key, accepted) for accepted in self._event_keys]
        return any(matches)

    def is_signing_key(self, key: str) -> bool:
        return self._signing_key is None or _same(key, self._signing_key)

    def bearer(self) -> dict[str, str]:
        """Headers that authenticate a call of the API."""
        return {} if self._signing_key is None else {"Authorization": f"Bearer {self._signing_key}"}

    def allows(self, connection: HTTPConnection) -> bool:
        """Whether the request carries the signing key, a live session, or the proxy's header."""
        if self._signing_key is None:
            return True
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token and _same(token.strip(), self._signing_key):
            return True
        if self.proxy_header and connection.headers.get(self.proxy_header, "").strip():
            return True
        return self.is_session(connection.cookies.get(SESSION_COOKIE, ""))

    def new_session(self, now_s: float | None = None) -> str:
        expires = int((time.time() if now_s is None else now_s) + self.session_ttl_s)
        return f"{expires}.{self._mac(str(expires))}"

    def is_session(self, cookie: str, now_s: float | None = None) -> bool:
        if self._signing_key is None or not cookie:
            return False
        expires, _, mac = cookie.partition(".")
        if not (expires.isascii() and expires.isdigit()) or not _same(mac, self._mac(expires)):
            return False
        return int(expires) > (time.time() if now_s is None else now_s)

    def _mac(self, text: str) -> str:
        assert self._signing_key is not None
        digest = hmac.new(
            self._signing_key.encode(), f"tideflow-session:{text}".encode(), hashlib.sha256
        ).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
