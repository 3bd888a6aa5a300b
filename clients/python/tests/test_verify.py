"""TokenVerifier against a running Gatehouse, alone and behind a small HTTP resource server (what a
client sees: 401/403/503 and the WWW-Authenticate challenge)."""
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gatehouse import GatehouseClient, TokenRejected, TokenVerifier, protected_resource_metadata, read_bearer, rejection_response


@pytest.fixture(scope="module")
def web(env):
    return GatehouseClient(env.issuer, env.web_id, env.web_secret)


def mcp_token(env, web, scope="tools:read"):
    return web.exchange_for_resource(env.resource_token, env.resource, scope=scope).access_token


def rejected(fn):
    with pytest.raises(TokenRejected) as e:
        fn()
    return e.value


def test_returns_the_claims_and_caches_the_keys(env, web):
    verifier = TokenVerifier(env.issuer, env.resource)
    claims = verifier.verify(mcp_token(env, web))
    assert (claims["iss"], claims["sub"], claims["aud"], claims["client_id"], claims["scope"]) == (env.issuer, env.user_sub, env.resource, env.web_id, "tools:read")
    verifier.verify(mcp_token(env, web))
    assert verifier.keys.fetches == 1


def test_refuses_other_audiences_missing_scopes_and_tampering(env, web):
    token = mcp_token(env, web)
    e = rejected(lambda: TokenVerifier(env.issuer, "https://other.example.com/").verify(token))
    assert (e.status, e.error) == (401, "invalid_token") and "aud" in str(e)
    e = rejected(lambda: TokenVerifier(env.issuer + "/", env.resource).verify(token))
    assert e.status == 401 and "iss" in str(e).lower()
    e = rejected(lambda: TokenVerifier(env.issuer, env.resource, required_scopes=["tools:write"]).verify(token))
    assert (e.status, e.error, e.scope) == (403, "insufficient_scope", ["tools:write"])
    e = rejected(lambda: TokenVerifier(env.issuer, env.resource).verify(token[:-4] + "AAAA"))
    assert (e.status, e.error) == (401, "invalid_token")
    # The delegation token is a Gatehouse JWT too, but for Gatehouse's audience: refused here.
    e = rejected(lambda: TokenVerifier(env.issuer, env.resource).verify(next(iter(env.attributes.values()))))
    assert e.status == 401


def test_a_revoked_token_is_refused_and_an_unanswerable_check_fails_closed(env, web):
    verifier = TokenVerifier(env.issuer, env.resource, client_id=env.rs_id, client_secret=env.rs_secret, cache_seconds=0)
    token, other = mcp_token(env, web), mcp_token(env, web)
    assert verifier.verify(token)["sub"] == env.user_sub
    web.revoke(token)
    e = rejected(lambda: verifier.verify(token))
    assert (e.status, str(e)) == (401, "token has been revoked")
    assert verifier.verify(other)["sub"] == env.user_sub
    wrong = TokenVerifier(env.issuer, env.resource, client_id=env.rs_id, client_secret="not the secret")
    e = rejected(lambda: wrong.verify(other))
    assert (e.status, e.error) == (503, "temporarily_unavailable")


class _Api(BaseHTTPRequestHandler):
    """A resource server: GET /tools needs tools:read, POST /tools needs tools:write."""

    verifier: TokenVerifier
    metadata_url: str

    def _answer(self, status, headers, body):
        self.send_response(status)
        for k, v in {**headers, "content-type": "application/json"}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def _handle(self, scope):
        try:
            claims = self.verifier.verify(read_bearer(self.headers.get("authorization")), required_scopes=[scope])
        except TokenRejected as err:
            return self._answer(*rejection_response(err, self.metadata_url))
        self._answer(200, {}, {"user": claims["sub"]})

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._handle("tools:read")

    def do_POST(self):  # noqa: N802
        self._handle("tools:write")

    def log_message(self, *args):
        pass


def test_a_resource_server_answers_with_the_challenges_clients_act_on(env, web):
    path, doc = protected_resource_metadata(env.resource, env.issuer, ["tools:read", "tools:write"])
    assert path.startswith("/.well-known/oauth-protected-resource/") and doc["authorization_servers"] == [env.issuer]
    _Api.verifier = TokenVerifier(env.issuer, env.resource, client_id=env.rs_id, client_secret=env.rs_secret, cache_seconds=0)
    _Api.metadata_url = "https://tools.example.com" + path
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/tools"

    def call(method="GET", token=None):
        req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None, headers={"authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req) as res:
                return res.status, res.headers, json.loads(res.read())
        except urllib.error.HTTPError as e:
            return e.code, e.headers, json.loads(e.read())

    try:
        status, headers, _ = call()
        # RFC 6750 §3.1: no token, no error code; where to get one.
        assert (status, headers["www-authenticate"]) == (401, f'Bearer resource_metadata="{_Api.metadata_url}"')
        token = mcp_token(env, web)
        assert call(token=token)[::2] == (200, {"user": env.user_sub})
        status, headers, body = call("POST", token)
        assert status == 403
        assert headers["www-authenticate"] == f'Bearer error="insufficient_scope", error_description="token lacks scope tools:write", scope="tools:write", resource_metadata="{_Api.metadata_url}"'
        assert body == {"error": "insufficient_scope", "error_description": "token lacks scope tools:write", "scope": "tools:write"}
        web.revoke(token)
        status, headers, body = call(token=token)
        assert (status, body["error"]) == (401, "invalid_token")
        assert headers["www-authenticate"].startswith('Bearer error="invalid_token", error_description="token has been revoked"')
    finally:
        server.shutdown()
