"""A Gatehouse client for agents and backends: its own tokens (client credentials) and RFC 8693 token
exchange for MCP/resource tokens (optionally as an acting agent, with `actor_token`) and LiveKit room
tokens. Synchronous (urllib); in asyncio code call it through `asyncio.to_thread`."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from ._http import basic_auth, request_json

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
LIVEKIT_TOKEN_TYPE = "urn:gatehouse:token-type:livekit"

#: A cached token is renewed this long before it expires, so a caller never gets one about to lapse.
RENEW_BEFORE_SECONDS = 30


@dataclass(frozen=True)
class TokenResponse:
    """A token endpoint answer (RFC 6749 §5.1, RFC 8693 §2.2.1)."""

    access_token: str
    token_type: str
    expires_in: int
    expires_at: float
    scope: Optional[str] = None
    issued_token_type: Optional[str] = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def scopes(self) -> Tuple[str, ...]:
        return tuple((self.scope or "").split())


@dataclass(frozen=True)
class LiveKitToken:
    """A LiveKit room token from the exchange: connect with `livekit.rtc.Room().connect(server_url, token)`."""

    token: str
    server_url: str
    room_name: str
    participant_identity: str
    expires_in: int
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


class GatehouseClient:
    """A confidential client of Gatehouse (`gatehouse client create --grant client_credentials ...`).

    >>> gh = GatehouseClient("https://id.example.com", client_id, client_secret)
    >>> own = gh.client_credentials()                           # cached until shortly before it expires
    >>> mcp = gh.exchange_for_resource(user_token, "https://tools.example.com/mcp", scope="tools:read",
    ...                                actor_token=own.access_token)   # the agent acts for the user
    """

    def __init__(self, issuer: str, client_id: str, client_secret: str, *, timeout: float = 10.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._auth = basic_auth(client_id, client_secret)
        self._timeout = timeout
        self._cache: Dict[Tuple[Optional[str], Optional[str]], TokenResponse] = {}
        self._lock = threading.Lock()

    def _token(self, params: Mapping[str, Any]) -> Dict[str, Any]:
        return request_json(f"{self.issuer}/token", form=params, headers={"authorization": self._auth}, timeout=self._timeout)

    @staticmethod
    def _response(body: Mapping[str, Any]) -> TokenResponse:
        expires_in = int(body.get("expires_in", 0))
        return TokenResponse(
            access_token=body["access_token"],
            token_type=body.get("token_type", "Bearer"),
            expires_in=expires_in,
            expires_at=time.time() + expires_in,
            scope=body.get("scope"),
            issued_token_type=body.get("issued_token_type"),
            raw=dict(body),
        )

    def client_credentials(self, scope: Optional[str] = None, resource: Optional[str] = None, *, fresh: bool = False) -> TokenResponse:
        """This client's own access token (RFC 6749 §4.4), reused until RENEW_BEFORE_SECONDS before it expires.

        Parallel callers (threads) share one request: the lock is held while a token is fetched.
        """
        key = (scope, resource)
        with self._lock:
            hit = self._cache.get(key)
            if hit and not fresh and hit.expires_at - RENEW_BEFORE_SECONDS > time.time():
                return hit
            token = self._response(self._token({"grant_type": "client_credentials", "scope": scope, "resource": resource}))
            self._cache[key] = token
            return token

    def exchange_for_resource(
        self,
        subject_token: str,
        resource: str,
        scope: Optional[str] = None,
        actor_token: Optional[str] = None,
    ) -> TokenResponse:
        """A token for a registered resource (an MCP server, an API) for the subject token's user.

        With `actor_token` (this client's own token, see `client_credentials`) the result names this
        client as the acting party (`act`); the subject token must allow it (a delegation token whose
        `may_act` names this client) or this client's policy must. Raises GatehouseError:
        invalid_request (subject/actor token not acceptable), invalid_target, invalid_scope.
        """
        params = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "resource": resource,
            "scope": scope,
        }
        if actor_token:
            params.update(actor_token=actor_token, actor_token_type=ACCESS_TOKEN_TYPE)
        return self._response(self._token(params))

    def act_for(self, delegation_token: str, resource: str, scope: Optional[str] = None) -> TokenResponse:
        """An agent's usual step: its own token as actor + the user's delegation token → a resource token."""
        return self.exchange_for_resource(delegation_token, resource, scope=scope, actor_token=self.client_credentials().access_token)

    def exchange_for_livekit(
        self,
        subject_token: str,
        room: Optional[str] = None,
        *,
        participant_name: Optional[str] = None,
        agent_names: Iterable[str] = (),
        participant_metadata: Optional[str] = None,
        device_id: Optional[str] = None,
    ) -> LiveKitToken:
        """A LiveKit room token for the subject token's user. What it may do in which rooms is Gatehouse's
        policy, never the request's; without `room` Gatehouse picks a fresh room name. `device_id`
        (letters, digits, -) gives the participant its own identity, `user_<sub>_<device>`."""
        body = self._token({
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": LIVEKIT_TOKEN_TYPE,
            "room": room,
            "participant_name": participant_name,
            "agent_name": list(agent_names) or None,
            "participant_metadata": participant_metadata,
            "device_id": device_id,
        })
        return LiveKitToken(
            token=body["access_token"],
            server_url=body["server_url"],
            room_name=body["room_name"],
            participant_identity=body["participant_identity"],
            expires_in=int(body.get("expires_in", 0)),
            raw=dict(body),
        )

    def revoke(self, token: str, token_type_hint: Optional[str] = None) -> None:
        """Revoke a token this client holds (RFC 7009); revoked tokens and those derived from them stop working."""
        request_json(f"{self.issuer}/token/revocation", form={"token": token, "token_type_hint": token_type_hint}, headers={"authorization": self._auth}, timeout=self._timeout)

    def introspect(self, token: str) -> Dict[str, Any]:
        """Gatehouse's view of a token (RFC 7662): `{"active": false}` once revoked or expired."""
        return request_json(f"{self.issuer}/token/introspection", form={"token": token}, headers={"authorization": self._auth}, timeout=self._timeout)


def delegation_token_from_attributes(attributes: Mapping[str, str], agent_name: str) -> Optional[str]:
    """The user's delegation token for this agent, from the participant attributes Gatehouse's
    connection-details put in the user's LiveKit token (`gatehouse.delegation.<agent_name>`).
    In LiveKit Agents: `delegation_token_from_attributes(participant.attributes, "voice-helper")`."""
    return attributes.get(f"gatehouse.delegation.{agent_name}") or None

