"""FastAPI dependency (optional: `pip install gatehouse[fastapi]`; nothing else in the package needs FastAPI).

    from gatehouse import TokenVerifier
    from gatehouse.fastapi import require_token

    verifier = TokenVerifier(ISSUER, "https://tools.example.com/mcp", client_id=..., client_secret=...)

    @app.get("/tools")
    def tools(claims: dict = Depends(require_token(verifier, scopes=["tools:read"],
                                                   resource_metadata_url=METADATA_URL))):
        return {"user": claims["sub"]}

A refused token is answered 401/403/503 with the same WWW-Authenticate challenge as `rejection_response`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional

try:
    from fastapi import HTTPException, Request
except ImportError as e:  # pragma: no cover - exercised only where FastAPI is missing
    raise ImportError("gatehouse.fastapi needs FastAPI: pip install 'gatehouse[fastapi]'") from e

from .errors import TokenRejected
from .verify import TokenVerifier, read_bearer, rejection_response


def require_token(verifier: TokenVerifier, scopes: Iterable[str] = (), resource_metadata_url: Optional[str] = None) -> Callable[[Request], Dict[str, Any]]:
    """A dependency returning the verified claims, or raising HTTPException with the challenge headers."""
    needed = tuple(scopes)

    def gatehouse_token(request: Request) -> Dict[str, Any]:
        try:
            return verifier.verify(read_bearer(request.headers.get("authorization")), required_scopes=needed)
        except TokenRejected as err:
            status, headers, body = rejection_response(err, resource_metadata_url)
            raise HTTPException(status_code=status, detail=body, headers=headers) from None

    return gatehouse_token
