"""The few HTTP calls the package makes, on the standard library (urllib), so it needs no HTTP package."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping, Optional

from .errors import GatehouseError, GatehouseUnavailable


def basic_auth(client_id: str, client_secret: str) -> str:
    # RFC 6749 §2.3.1: id and secret are form-encoded before base64.
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def request_json(
    url: str,
    *,
    form: Optional[Mapping[str, Any]] = None,
    body: Optional[Any] = None,
    headers: Optional[Mapping[str, str]] = None,
    timeout: float = 10.0,
) -> dict:
    """POSTs a form (or JSON body), or GETs; returns the JSON answer or raises GatehouseError."""
    data = None
    h = {"accept": "application/json", **(headers or {})}
    if form is not None:
        pairs = []
        for k, v in form.items():
            if v is None:
                continue
            for item in v if isinstance(v, (list, tuple)) else [v]:
                pairs.append((k, str(item)))
        data = urllib.parse.urlencode(pairs).encode()
        h["content-type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        h["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=h, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return json.loads(res.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            payload = {}
        if e.code >= 500 or e.code == 429:
            raise GatehouseUnavailable(e.code, payload.get("error", "temporarily_unavailable"), payload.get("error_description"), e.headers.get("retry-after")) from None
        raise GatehouseError(e.code, payload.get("error", "unknown_error"), payload.get("error_description")) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise GatehouseUnavailable(503, "temporarily_unavailable", f"Gatehouse cannot be reached: {e}") from None
