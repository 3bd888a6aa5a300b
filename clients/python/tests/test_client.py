"""GatehouseClient against a running Gatehouse: its own tokens, exchanges, delegation, the example agent."""
import json
import os
import subprocess
import sys
import threading

import jwt
import pytest

from gatehouse import GatehouseClient, GatehouseError, delegation_token_from_attributes

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def claims_of(token):
    # Reading claims the test itself will judge; signature checks are TokenVerifier's (test_verify.py).
    return jwt.decode(token, options={"verify_signature": False})


def test_client_credentials_are_cached_and_parallel_callers_share_one_token(env):
    gh = GatehouseClient(env.issuer, env.agent_id, env.agent_secret)
    tokens, errors = [], []

    def take():
        try:
            tokens.append(gh.client_credentials().access_token)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(tokens) == 8 and len(set(tokens)) == 1
    assert gh.client_credentials().access_token == tokens[0]
    fresh = gh.client_credentials(fresh=True)
    assert fresh.access_token != tokens[0]
    assert gh.introspect(fresh.access_token)["active"] is True


def test_wrong_client_secret_is_invalid_client(env):
    with pytest.raises(GatehouseError) as e:
        GatehouseClient(env.issuer, env.agent_id, "not the secret").client_credentials()
    assert (e.value.status, e.value.error) == (401, "invalid_client")


def test_exchange_for_resource_gives_an_audience_bound_token_for_the_user(env):
    gh = GatehouseClient(env.issuer, env.web_id, env.web_secret)
    mcp = gh.exchange_for_resource(env.resource_token, env.resource, scope="tools:read")
    assert mcp.issued_token_type == "urn:ietf:params:oauth:token-type:access_token"
    assert mcp.scopes == ("tools:read",)
    claims = claims_of(mcp.access_token)
    assert (claims["aud"], claims["sub"], claims["client_id"], claims["scope"]) == (env.resource, env.user_sub, env.web_id, "tools:read")
    assert claims["exp"] - claims["iat"] <= 900


def test_exchange_refuses_what_policy_does_not_grant(env):
    gh = GatehouseClient(env.issuer, env.web_id, env.web_secret)
    with pytest.raises(GatehouseError) as e:
        gh.exchange_for_resource(env.resource_token, env.resource, scope="tools:admin")
    assert (e.value.status, e.value.error) == (400, "invalid_scope")
    with pytest.raises(GatehouseError) as e:
        gh.exchange_for_resource(env.resource_token, "https://not-registered.example.com/mcp")
    assert e.value.error == "invalid_target"
    with pytest.raises(GatehouseError) as e:
        gh.exchange_for_resource("not-a-token", env.resource)
    assert e.value.error == "invalid_request"


def test_exchange_for_livekit_gives_a_room_token_signed_for_livekit(env):
    gh = GatehouseClient(env.issuer, env.web_id, env.web_secret)
    room = f"user_{env.user_sub}_python"
    lk = gh.exchange_for_livekit(env.user_token, room, agent_names=[env.agent_name])
    assert (lk.server_url, lk.room_name, lk.participant_identity) == (env.livekit_url, room, f"user_{env.user_sub}")
    claims = jwt.decode(lk.token, env.livekit_secret, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["iss"] == env.livekit_key and claims["sub"] == f"user_{env.user_sub}"
    assert claims["video"]["roomJoin"] is True and claims["video"]["room"] == room
    assert [a["agentName"] for a in claims["roomConfig"]["agents"]] == [env.agent_name]
    with pytest.raises(GatehouseError) as e:
        gh.exchange_for_livekit(env.user_token, "someone-elses-room")
    assert e.value.error == "invalid_target"
    # One identity per device; a bad device id is the request's fault.
    assert gh.exchange_for_livekit(env.user_token, room, device_id="kiosk-1").participant_identity == f"user_{env.user_sub}_kiosk-1"
    with pytest.raises(GatehouseError) as e:
        gh.exchange_for_livekit(env.user_token, room, device_id="not_ok")
    assert (e.value.status, e.value.error) == (400, "invalid_request")


def test_agent_acts_for_the_user_with_the_delegation_token_from_participant_attributes(env):
    delegation = delegation_token_from_attributes(env.attributes, env.agent_name)
    assert delegation and delegation_token_from_attributes(env.attributes, "another-agent") is None
    assert claims_of(delegation)["may_act"] == {"sub": env.agent_id}
    agent = GatehouseClient(env.issuer, env.agent_id, env.agent_secret)
    mcp = agent.act_for(delegation, env.resource, "tools:read")
    claims = claims_of(mcp.access_token)
    assert (claims["sub"], claims["aud"], claims["act"]) == (env.user_sub, env.resource, {"sub": env.agent_id})
    # Without the actor token the delegation token is no good.
    with pytest.raises(GatehouseError) as e:
        agent.exchange_for_resource(delegation, env.resource)
    assert e.value.error == "invalid_request"


def test_example_agent_calls_the_mcp_tool_as_the_user(env):
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "examples", "agent.py")],
        env={**os.environ, "AGENT_CLIENT_ID": env.agent_id, "AGENT_CLIENT_SECRET": env.agent_secret, "AGENT_NAME": env.agent_name,
             "PARTICIPANT_ATTRIBUTES": json.dumps(env.attributes), "MCP_RESOURCE": env.resource, "PYTHONPATH": HERE},
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"user": env.user_sub, "client_id": env.agent_id, "acting_agent": env.agent_id, "scope": "tools:read"}
