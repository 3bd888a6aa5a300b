// A minimal MCP tool server that trusts Gatehouse: it verifies the bearer token against Gatehouse's
// /jwks (RFC 9068: typ at+jwt, iss, aud = this server's resource URI exactly, exp), requires the
// tool's scope, and reports who acts for whom (`act`, RFC 8693 §4.1).
//
//   GATEHOUSE_ISSUER=http://127.0.0.1:3000 MCP_RESOURCE=http://127.0.0.1:8787/mcp npx tsx examples/mcp-server.ts
//
// It speaks just enough MCP (JSON-RPC 2.0 over HTTP POST: initialize, tools/list, tools/call) for the
// agent example; a real server would use the MCP SDK with this verification in front of it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';

export interface McpServerOptions {
  issuer: string;
  /** The resource URI exactly as registered in Gatehouse (`gatehouse resource create --uri ...`); default `<url>/mcp`. */
  resource?: string;
  port?: number;
}

const TOOLS = [
  { name: 'whoami', description: 'Who the token is for, and which agent acts for them', scope: 'tools:read', inputSchema: { type: 'object', properties: {} } },
];

export async function startMcpServer(opts: McpServerOptions) {
  const jwks = createRemoteJWKSet(new URL(`${opts.issuer}/jwks`));
  let resource = opts.resource ?? '';
  const path = () => new URL(resource).pathname;

  async function authenticate(req: http.IncomingMessage): Promise<JWTPayload> {
    const m = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '');
    if (!m) throw Object.assign(new Error('missing bearer token'), { status: 401 });
    try {
      const { payload } = await jwtVerify(m[1], jwks, { issuer: opts.issuer, audience: resource, typ: 'at+jwt', algorithms: ['ES256', 'RS256'] });
      return payload;
    } catch (err) {
      throw Object.assign(new Error(`invalid token: ${(err as Error).message}`), { status: 401 });
    }
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
    let claims: JWTPayload;
    try {
      claims = await authenticate(req);
    } catch (err) {
      // RFC 9728 §5.1: the challenge names the resource metadata, which names Gatehouse.
      return send(401, { error: 'invalid_token', error_description: (err as Error).message }, {
        'www-authenticate': `Bearer error="invalid_token", resource_metadata="${new URL(`/.well-known/oauth-protected-resource${path()}`, resource).href}"`,
      });
    }
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
  const s = await startMcpServer({ issuer, resource, port: Number(new URL(resource).port || 8787) });
  console.log(`MCP example listening on ${s.url}, resource ${resource}, trusting ${issuer}`);
}
