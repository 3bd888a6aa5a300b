// A minimal MCP tool server that trusts Gatehouse. Every request's bearer token goes through the SDK
// helper `createTokenVerifier` (src/sdk/verify.ts): the JWT is checked against Gatehouse's /jwks
// (RFC 9068: typ at+jwt, iss, aud = this server's resource URI exactly, exp), then Gatehouse's
// introspection says whether it has been revoked (answer cached for `cacheSeconds`, so a revoked
// token is refused at most that long after the revocation). It requires the tool's scope, reports who
// acts for whom (`act`, RFC 8693 §4.1), serves its RFC 9728 metadata, and answers 401 with a
// WWW-Authenticate challenge naming that metadata.
//
//   gatehouse client create --name "MCP example" --grant client_credentials   # credentials to introspect with
//   GATEHOUSE_ISSUER=http://127.0.0.1:3000 MCP_RESOURCE=http://127.0.0.1:8787/mcp \
//   MCP_CLIENT_ID=... MCP_CLIENT_SECRET=... [MCP_CACHE_SECONDS=10] npx tsx examples/mcp-server.ts
//
// It speaks just enough MCP (JSON-RPC 2.0 over HTTP POST: initialize, tools/list, tools/call) for the
// agent example; a real server would use the MCP SDK with this verification in front of it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JWTPayload } from 'jose';
import { createTokenVerifier, TokenRejectedError } from '../src/sdk/verify.ts';

export interface McpServerOptions {
  issuer: string;
  /** The resource URI exactly as registered in Gatehouse (`gatehouse resource create --uri ...`); default `<url>/mcp`. */
  resource?: string;
  port?: number;
  /**
   * This server's own Gatehouse client credentials, used to ask introspection whether a token has
   * been revoked. Without them only the JWT is checked and a revoked token works until it expires.
   */
  clientId?: string;
  clientSecret?: string;
  /** How long an introspection answer is reused (the worst-case delay before a revocation bites). Default 10. */
  cacheSeconds?: number;
}

const TOOLS = [
  { name: 'whoami', description: 'Who the token is for, and which agent acts for them', scope: 'tools:read', inputSchema: { type: 'object', properties: {} } },
];

export async function startMcpServer(opts: McpServerOptions) {
  let resource = opts.resource ?? '';
  const path = () => new URL(resource).pathname;
  // Made on first use: without opts.resource the audience is known only once the port is.
  let verify: ReturnType<typeof createTokenVerifier> | undefined;

  /** Resolves to the token's claims; undefined when the request carries no token at all. */
  async function authenticate(req: http.IncomingMessage): Promise<JWTPayload | undefined> {
    const m = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '');
    if (!m) return undefined;
    verify ??= createTokenVerifier({ issuer: opts.issuer, audience: resource, clientId: opts.clientId, clientSecret: opts.clientSecret, cacheSeconds: opts.cacheSeconds });
    return verify(m[1]);
  }

  const server = http.createServer(async (req, res) => {
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    // RFC 9728 §3.1: the metadata URL is the resource's path inserted after the well-known prefix
    // (/.well-known/oauth-protected-resource/mcp); the root form is served too for older clients.
    if (req.method === 'GET' && (req.url === '/.well-known/oauth-protected-resource' || req.url === `/.well-known/oauth-protected-resource${path()}`)) {
      // Where clients get tokens for this resource, and which scopes its tools need.
      return send(200, { resource, authorization_servers: [opts.issuer], scopes_supported: TOOLS.map((t) => t.scope), bearer_methods_supported: ['header'], resource_name: 'Gatehouse example MCP server' });
    }
    // Streamable HTTP: this server answers POSTs with JSON and opens no SSE stream.
    if (req.url === path() && (req.method === 'GET' || req.method === 'DELETE')) return send(405, { error: 'method_not_allowed' }, { allow: 'POST' });
    if (req.method !== 'POST' || req.url !== path()) return send(404, { error: 'not_found' });
    const challenge = (error?: string) => [
      ...(error ? [`error="${error}"`] : []),
      `resource_metadata="${new URL(`/.well-known/oauth-protected-resource${path()}`, resource).href}"`,
    ].join(', ');
    let claims: JWTPayload | undefined;
    try {
      claims = await authenticate(req);
    } catch (err) {
      // Gatehouse could not say whether the token is revoked: refuse, and ask the client to retry.
      if (err instanceof TokenRejectedError && err.status === 503) {
        return send(503, { error: 'temporarily_unavailable', error_description: err.message }, { 'retry-after': '5' });
      }
      // RFC 9728 §5.1: the challenge names the resource metadata, which names Gatehouse.
      return send(401, { error: 'invalid_token', error_description: (err as Error).message }, { 'www-authenticate': `Bearer ${challenge('invalid_token')}` });
    }
    // RFC 6750 §3.1: a request without any credentials gets the challenge but no error code.
    if (!claims) return send(401, { error_description: 'a bearer token is required' }, { 'www-authenticate': `Bearer ${challenge()}` });
    let raw = '';
    for await (const chunk of req) raw += chunk;
    let rpc: { id?: unknown; method?: string; params?: { name?: string } };
    try {
      rpc = JSON.parse(raw);
    } catch {
      return send(400, { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } });
    }
    // JSON-RPC notifications (no id, e.g. notifications/initialized) are accepted with 202 (Streamable HTTP).
    if (rpc.id === undefined && typeof rpc.method === 'string' && rpc.method.startsWith('notifications/')) {
      res.writeHead(202).end();
      return;
    }
    const scopes = new Set(String(claims.scope ?? '').split(' '));
    const reply = (result: unknown) => send(200, { jsonrpc: '2.0', id: rpc.id ?? null, result });
    switch (rpc.method) {
      case 'initialize':
        return reply({ protocolVersion: '2025-06-18', serverInfo: { name: 'gatehouse-example-mcp', version: '0.1.0' }, capabilities: { tools: {} } });
      case 'tools/list':
        return reply({ tools: TOOLS.filter((t) => scopes.has(t.scope)).map(({ scope: _s, ...t }) => t) });
      case 'tools/call': {
        const tool = TOOLS.find((t) => t.name === rpc.params?.name);
        if (!tool) return send(200, { jsonrpc: '2.0', id: rpc.id ?? null, error: { code: -32602, message: 'unknown tool' } });
        if (!scopes.has(tool.scope)) {
          return send(403, { error: 'insufficient_scope', scope: tool.scope }, { 'www-authenticate': `Bearer error="insufficient_scope", scope="${tool.scope}"` });
        }
        const who = { user: claims.sub, client_id: claims.client_id, acting_agent: (claims.act as { sub?: string } | undefined)?.sub ?? null, scope: claims.scope };
        return reply({ content: [{ type: 'text', text: JSON.stringify(who) }], structuredContent: who });
      }
      default:
        return send(200, { jsonrpc: '2.0', id: rpc.id ?? null, error: { code: -32601, message: 'method not found' } });
    }
  });
  await new Promise<void>((r) => server.listen(opts.port ?? 0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  resource ||= `${url}/mcp`;
  return {
    url,
    resource,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

if (process.argv[1]?.endsWith('mcp-server.ts')) {
  const issuer = process.env.GATEHOUSE_ISSUER ?? 'http://127.0.0.1:3000';
  const resource = process.env.MCP_RESOURCE ?? 'http://127.0.0.1:8787/mcp';
  const { MCP_CLIENT_ID: clientId, MCP_CLIENT_SECRET: clientSecret, MCP_CACHE_SECONDS: cache } = process.env;
  const s = await startMcpServer({ issuer, resource, port: Number(new URL(resource).port || 8787), clientId, clientSecret, cacheSeconds: cache ? Number(cache) : undefined });
  console.log(`MCP example listening on ${s.url}, resource ${resource}, trusting ${issuer}`);
  if (!clientId) console.warn('MCP_CLIENT_ID/MCP_CLIENT_SECRET not set: tokens are checked offline only, and a revoked token works until it expires');
}
