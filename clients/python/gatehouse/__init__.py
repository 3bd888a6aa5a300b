"""Gatehouse for Python agents and backends.

- GatehouseClient: client credentials (cached), token exchange for MCP/resource tokens (with an actor
  token for delegation) and for LiveKit room tokens, revocation, introspection.
- delegation_token_from_attributes: the user's delegation token from LiveKit participant attributes.
- TokenVerifier: check Gatehouse access tokens in a resource server (RFC 9068, scopes, revocation).
"""
from .client import (
    ACCESS_TOKEN_TYPE,
    LIVEKIT_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    GatehouseClient,
    LiveKitToken,
    TokenResponse,
    delegation_token_from_attributes,
)
from .errors import GatehouseError, GatehouseUnavailable, TokenRejected
from .verify import TokenVerifier, protected_resource_metadata, read_bearer, rejection_response

__version__ = "0.1.0"
__all__ = [
    "ACCESS_TOKEN_TYPE",
    "LIVEKIT_TOKEN_TYPE",
    "TOKEN_EXCHANGE",
    "GatehouseClient",
    "GatehouseError",
    "GatehouseUnavailable",
    "LiveKitToken",
    "TokenRejected",
    "TokenResponse",
    "TokenVerifier",
    "delegation_token_from_attributes",
    "protected_resource_metadata",
    "read_bearer",
    "rejection_response",
]
