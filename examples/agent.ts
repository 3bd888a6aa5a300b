// Plays the voice agent: it authenticates with its own client credentials, exchanges the delegation
// token it found in the user's participant attributes (`gatehouse.delegation.<agent_name>`) for an
// MCP token for exactly that user (RFC 8693, actor_token = its own token), and calls the MCP server.
//
//   GATEHOUSE_ISSUER=http://127.0.0.1:3000 AGENT_CLIENT_ID=... AGENT_CLIENT_SECRET=... \
//   DELEGATION_TOKEN=eyJ... MCP_RESOURCE=http://127.0.0.1:8787/mcp npx tsx examples/agent.ts
//
// In a LiveKit agent the delegation token comes from
// `participant.attributes['gatehouse.delegation.' + agentName]` when the user joins.

export interface AgentOptions {
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The user's delegation token (may_act names this agent). */
  delegationToken: string;
  /** The MCP server's resource URI as registered in Gatehouse; also where it is called. */
  resource: string;
  scope?: string;
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';

async function token(issuer: string, clientId: string, clientSecret: string, params: Record<string, string>) {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams(params),
  });
  const body = await res.json() as Record<string, string>;
  if (!res.ok) throw new Error(`${params.grant_type}: ${body.error}: ${body.error_description}`);
  return body;
}

export async function runAgent(o: AgentOptions) {
  // 1. The agent's own access token: it proves who is acting.
  const own = await token(o.issuer, o.clientId, o.clientSecret, { grant_type: 'client_credentials' });
  // 2. Exchange: the user's delegation token (subject) + the agent's token (actor) → MCP token.
  const mcp = await token(o.issuer, o.clientId, o.clientSecret, {
    grant_type: TOKEN_EXCHANGE,
    subject_token: o.delegationToken,
    subject_token_type: ACCESS_TOKEN,
    actor_token: own.access_token,
    actor_token_type: ACCESS_TOKEN,
    resource: o.resource,
    ...(o.scope ? { scope: o.scope } : {}),
  });
  // 3. Call a tool with it.
  const res = await fetch(o.resource, {
    method: 'POST',
    // Streamable HTTP (MCP): the client accepts a JSON answer or an event stream.
    headers: { authorization: `Bearer ${mcp.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }),
  });
  const rpc = await res.json() as { result?: { structuredContent: { user: string; acting_agent: string; scope: string } }; error?: unknown };
  if (!res.ok || !rpc.result) throw new Error(`MCP call failed (${res.status}): ${JSON.stringify(rpc)}`);
  return { mcpToken: mcp, whoami: rpc.result.structuredContent };
}

if (process.argv[1]?.endsWith('agent.ts')) {
  const env = (k: string) => process.env[k] ?? (() => { throw new Error(`${k} is required`); })();
  const out = await runAgent({
    issuer: process.env.GATEHOUSE_ISSUER ?? 'http://127.0.0.1:3000',
    clientId: env('AGENT_CLIENT_ID'),
    clientSecret: env('AGENT_CLIENT_SECRET'),
    delegationToken: env('DELEGATION_TOKEN'),
    resource: env('MCP_RESOURCE'),
    scope: process.env.MCP_SCOPE,
  });
  console.log(JSON.stringify(out.whoami, null, 2));
}
