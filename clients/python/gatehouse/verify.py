"""Verify Gatehouse access tokens in a Python resource server (an MCP server, an API).

The JWT is checked locally against Gatehouse's signing keys (RFC 9068: typ at+jwt, iss, aud, exp,
iat, sub, client_id), its scopes against what the caller needs, and, given the resource server's own
client credentials, Gatehouse's introspection (RFC 7662) says whether it was revoked; that answer is
reused for `cache_seconds`. Fails closed: when Gatehouse cannot answer, the token is refused (503).
"""
from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import jwt

from ._http import basic_auth, request_json
from .errors import GatehouseError, TokenRejected

DEFAULT_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")


class _KeySet:
    """Gatehouse's JWKS, cached; fetched again for an unknown kid (Gatehouse rotated its keys), at most
    once per `cooldown` seconds, so made-up kids cannot make this server flood Gatehouse."""

    def __init__(self, uri: str, cooldown: float, max_age: float, timeout: float) -> None:
        self.uri, self.cooldown, self.max_age, self.timeout = uri, cooldown, max_age, timeout
        self.keys: Dict[str, jwt.PyJWK] = {}
        self.fetched_at = 0.0
        self.fetches = 0
        self._lock = threading.Lock()

    def _fetch(self) -> None:
        try:
            doc = request_json(self.uri, timeout=self.timeout)
        except GatehouseError:
            raise TokenRejected("Gatehouse's signing keys cannot be fetched right now", "temporarily_unavailable") from None
        keys: Dict[str, jwt.PyJWK] = {}
        for k in doc.get("keys", []):
            if k.get("use", "sig") != "sig" or "kid" not in k:
                continue
            try:
                keys[k["kid"]] = jwt.PyJWK(k)
            except jwt.PyJWTError:
                continue  # a key type this PyJWT cannot use
        self.keys, self.fetched_at = keys, time.time()
        self.fetches += 1

    def get(self, kid: Optional[str]) -> jwt.PyJWK:
        with self._lock:
            now = time.time()
            if not self.keys or now - self.fetched_at > self.max_age:
                self._fetch()
            elif kid not in self.keys and now - self.fetched_at > self.cooldown:
                self._fetch()
            if kid not in self.keys:
                raise TokenRejected("token is signed with a key Gatehouse does not publish")
            return self.keys[kid]


class TokenVerifier:
    """Checks Gatehouse access tokens for one resource.

    >>> verifier = TokenVerifier("https://id.example.com", "https://tools.example.com/mcp",
    ...                          client_id=rs_id, client_secret=rs_secret)   # credentials: revocation checks
    >>> claims = verifier.verify(token, required_scopes=["tools:read"])      # raises TokenRejected
    """

    def __init__(
        self,
        issuer: str,
        audience: Union[str, Sequence[str]],
        *,
        required_scopes: Iterable[str] = (),
        leeway: float = 5,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        jwks_uri: Optional[str] = None,
        jwks_cooldown_seconds: float = 30,
        client_id: Optional[str] = None,
        client_secret: Optional[str] = None,
        cache_seconds: float = 10,
        timeout: float = 5,
    ) -> None:
        self.issuer = issuer
        self.audience = [audience] if isinstance(audience, str) else list(audience)
        self.required_scopes = tuple(required_scopes)
        self.leeway = leeway
        self.algorithms = list(algorithms)
        self.keys = _KeySet(jwks_uri or f"{issuer.rstrip('/')}/jwks", jwks_cooldown_seconds, 600, timeout)
        self._introspection = (f"{issuer.rstrip('/')}/token/introspection", basic_auth(client_id, client_secret or "")) if client_id else None
        self._cache_seconds = cache_seconds
        self._answers: Dict[str, Tuple[bool, float]] = {}
        self._timeout = timeout

    def verify(self, token: str, required_scopes: Iterable[str] = ()) -> Dict[str, Any]:
        """The token's claims; raises TokenRejected (status 401 / 403 insufficient_scope / 503)."""
        if not token:
            raise TokenRejected("an access token is required", None)
        claims = self._check_jwt(token)
        self._check_scopes(claims, required_scopes)
        self._check_not_revoked(token, claims)
        return claims

    def _check_jwt(self, token: str) -> Dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("invalid token: not a JWT") from None
        # RFC 9068 §4: typ at+jwt, so an ID token or another JWT of the issuer is not taken for an access token.
        if str(header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
            raise TokenRejected("invalid token: typ is not at+jwt")
        if header.get("alg") not in self.algorithms:
            raise TokenRejected("invalid token: signature algorithm not accepted")
        key = self.keys.get(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[header["alg"]],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["iss", "aud", "exp", "iat", "sub", "client_id"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("token is for another audience (aud)") from None
        except jwt.PyJWTError as e:
            raise TokenRejected(f"invalid token: {e}") from None
        # PyJWT checks iat is a number; a token issued in the future (beyond the leeway) is refused too.
        if claims["iat"] > time.time() + self.leeway:
            raise TokenRejected("token was issued in the future (check clocks)")
        return claims

    def _check_scopes(self, claims: Mapping[str, Any], extra: Iterable[str]) -> None:
        needed = list(dict.fromkeys([*self.required_scopes, *extra]))
        held = set(str(claims.get("scope", "")).split())
        missing = [s for s in needed if s not in held]
        if missing:
            # RFC 6750 §3.1: insufficient_scope names the scope needed, so the client can step up.
            raise TokenRejected(f"token lacks scope {' '.join(missing)}", "insufficient_scope", needed)

    def _check_not_revoked(self, token: str, claims: Mapping[str, Any]) -> None:
        if not self._introspection:
            return
        key = str(claims.get("jti") or hashlib.sha256(token.encode()).hexdigest())
        hit = self._answers.get(key)
        if hit and hit[1] > time.time():
            active = hit[0]
        else:
            url, auth = self._introspection
            try:
                answer = request_json(url, form={"token": token, "token_type_hint": "access_token"}, headers={"authorization": auth}, timeout=self._timeout)
            except GatehouseError:
                # Unreachable, 5xx, or these credentials refused: not a "yes", so refused (fail closed).
                raise TokenRejected("revocation status cannot be checked right now", "temporarily_unavailable") from None
            active = answer.get("active") is True
            if self._cache_seconds > 0:
                if len(self._answers) > 10_000:
                    self._answers.clear()
                self._answers[key] = (active, min(time.time() + self._cache_seconds, float(claims["exp"])))
        if not active:
            raise TokenRejected("token has been revoked")


def read_bearer(authorization: Optional[str]) -> str:
    """The token from an Authorization header (RFC 6750 §2.1); TokenRejected(error=None) when there is none."""
    parts = (authorization or "").strip().split(" ")
    if len(parts) < 1 or parts[0].lower() != "bearer":
        raise TokenRejected("an access token is required", None)
    if len(parts) != 2 or not parts[1]:
        raise TokenRejected("malformed Authorization header", "invalid_request")
    return parts[1]


def rejection_response(err: TokenRejected, resource_metadata_url: Optional[str] = None) -> Tuple[int, Dict[str, str], Dict[str, Any]]:
    """(status, headers, JSON body) for a refusal: the WWW-Authenticate challenge names the resource's
    RFC 9728 metadata (so MCP clients find Gatehouse) and, for insufficient_scope, the scope to step up to."""
    if err.status == 503:
        return 503, {"retry-after": "5", "cache-control": "no-store"}, {"error": "temporarily_unavailable", "error_description": str(err)}

    def q(s: str) -> str:
        return s.replace("\\", "\\\\").replace('"', '\\"')

    params = []
    body: Dict[str, Any] = {"error_description": str(err)}
    if err.error:
        params += [f'error="{q(err.error)}"', f'error_description="{q(str(err))}"']
        body["error"] = err.error
    if err.scope:
        params.append(f'scope="{q(" ".join(err.scope))}"')
        body["scope"] = " ".join(err.scope)
    if resource_metadata_url:
        params.append(f'resource_metadata="{q(resource_metadata_url)}"')
    challenge = "Bearer" + (" " + ", ".join(params) if params else "")
    return err.status, {"www-authenticate": challenge, "cache-control": "no-store"}, body


def protected_resource_metadata(resource: str, issuer: str, scopes_supported: Optional[Sequence[str]] = None, resource_name: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
    """(path, document) of the resource's RFC 9728 metadata: serve `document` as JSON at `path`."""
    from urllib.parse import urlsplit

    path = urlsplit(resource).path.rstrip("/")
    doc: Dict[str, Any] = {"resource": resource, "authorization_servers": [issuer], "bearer_methods_supported": ["header"]}
    if scopes_supported:
        doc["scopes_supported"] = list(scopes_supported)
    if resource_name:
        doc["resource_name"] = resource_name
    return f"/.well-known/oauth-protected-resource{path}", doc


__all__ = ["TokenVerifier", "read_bearer", "rejection_response", "protected_resource_metadata"]
