"""Errors, each carrying what the HTTP answer said (status, OAuth error code, description)."""
from __future__ import annotations

from typing import Optional, Sequence


class GatehouseError(Exception):
    """Gatehouse refused a request (RFC 6749 §5.2 / RFC 8693 §2.2.2): e.g. invalid_scope, invalid_target."""

    def __init__(self, status: int, error: str, description: Optional[str] = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.status = status
        self.error = error
        self.description = description


class GatehouseUnavailable(GatehouseError):
    """Gatehouse could not answer (unreachable, 5xx or 429); `retry_after` is its Retry-After, if any."""

    def __init__(self, status: int, error: str, description: Optional[str] = None, retry_after: Optional[str] = None) -> None:
        super().__init__(status, error, description)
        self.retry_after = retry_after


class TokenRejected(Exception):
    """A resource server refuses a token: `status` 401/403/503, `error` the code for WWW-Authenticate
    (None when the request had no token, RFC 6750 §3.1), `scope` what a step-up needs (insufficient_scope)."""

    def __init__(self, message: str, error: Optional[str] = "invalid_token", scope: Optional[Sequence[str]] = None) -> None:
        super().__init__(message)
        self.error = error
        self.scope = list(scope) if scope else None
        self.status = {None: 401, "invalid_request": 400, "invalid_token": 401, "insufficient_scope": 403, "temporarily_unavailable": 503}.get(error, 401)
