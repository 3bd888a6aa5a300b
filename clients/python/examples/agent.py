"""A voice agent's Gatehouse steps, runnable without LiveKit: take the user's delegation token from
their participant attributes, exchange it (with the agent's own token as actor) for an MCP token for
exactly that user, and call an MCP tool with it.

    GATEHOUSE_ISSUER=http://127.0.0.1:3000 AGENT_CLIENT_ID=... AGENT_CLIENT_SECRET=... \\
    AGENT_NAME=voice-helper PARTICIPANT_ATTRIBUTES='{"gatehouse.delegation.voice-helper": "eyJ..."}' \\
    MCP_RESOURCE=http://127.0.0.1:8787/mcp python3 examples/agent.py

Inside a LiveKit Agents worker the same steps read (livekit-agents is not needed for this file):

    from gatehouse import GatehouseClient, delegation_token_from_attributes

    gatehouse = GatehouseClient(ISSUER, AGENT_CLIENT_ID, AGENT_CLIENT_SECRET)

    async def entrypoint(ctx: JobContext):
        await ctx.connect()
        participant = await ctx.wait_for_participant()
        delegation = delegation_token_from_attributes(participant.attributes, "voice-helper")
        mcp = await asyncio.to_thread(gatehouse.act_for, delegation, MCP_RESOURCE, "tools:read")
        # hand mcp.access_token to the MCP client of your tools (Authorization: Bearer ...)
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from typing import Any, Dict, Mapping, Optional

from gatehouse import GatehouseClient, delegation_token_from_attributes


def call_tool(mcp_url: str, token: str, name: str, arguments: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One MCP tools/call over Streamable HTTP (JSON answer)."""
    req = urllib.request.Request(
        mcp_url,
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments or {}}}).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json", "accept": "application/json, text/event-stream"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())["result"]["structuredContent"]


def run(gatehouse: GatehouseClient, attributes: Mapping[str, str], agent_name: str, resource: str, scope: Optional[str] = None) -> Dict[str, Any]:
    delegation = delegation_token_from_attributes(attributes, agent_name)
    if not delegation:
        raise SystemExit(f"no delegation token for agent {agent_name!r} in the participant's attributes")
    mcp = gatehouse.act_for(delegation, resource, scope)
    return call_tool(resource, mcp.access_token, "whoami")


if __name__ == "__main__":
    env = os.environ
    gh = GatehouseClient(env.get("GATEHOUSE_ISSUER", "http://127.0.0.1:3000"), env["AGENT_CLIENT_ID"], env["AGENT_CLIENT_SECRET"])
    out = run(gh, json.loads(env["PARTICIPANT_ATTRIBUTES"]), env.get("AGENT_NAME", "voice-helper"), env["MCP_RESOURCE"], env.get("MCP_SCOPE"))
    json.dump(out, sys.stdout)
    print()
