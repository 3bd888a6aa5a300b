// An MCP tool server on the official MCP TypeScript SDK, protected by @gatehouse/verify. Every request's
// token is checked by the package's Express middleware: the JWT against Gatehouse's /jwks (RFC 9068:
// typ at+jwt, iss, aud = this server's resource URI exactly, exp, iat, client_id, sub), the scope the
// called tool needs, and, with client credentials, Gatehouse's introspection for revocation (answer
// cached for `cacheSeconds`, so a revoked token is refused at most that long after the revocation).
// A token without the tool's scope gets 403 insufficient_scope naming it (the MCP host steps up);
// no token gets 401 naming the server's RFC 9728 metadata, which names Gatehouse.
//
//   gatehouse client create --name "MCP example" --grant client_credentials   # credentials to introspect with
//   gatehouse resource create --uri http://127.0.0.1:8787/mcp --scope tools:read --scope tools:write
//   GATEHOUSE_ISSUER=http://127.0.0.1:3000 MCP_RESOURCE=http://127.0.0.1:8787/mcp \
//   MCP_CLIENT_ID=... MCP_CLIENT_SECRET=... [MCP_CACHE_SECONDS=10] npx tsx examples/mcp-server.ts
import type { AddressInfo } from 'node:net';
import express, { type Request } from 'express';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { bearerAuth, createTokenVerifier, protectedResourceMetadata, type Authenticated } from '@gatehouse/verify';

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

/** Each tool and the scope it needs. */
const TOOL_SCOPES: Record<string, string> = { whoami: 'tools:read', add_note: 'tools:write' };

/** The scopes a JSON-RPC request (or batch) needs: those of the tools it calls. */
function scopesFor(req: Request): string[] {
  const messages = Array.isArray(req.body) ? req.body : [req.body];
  return messages
    .filter((m) => m?.method === 'tools/call' && typeof m.params?.name === 'string')
    .map((m) => TOOL_SCOPES[m.params.name])
    .filter(Boolean);
}

/** One MCP server per request (stateless Streamable HTTP), with only the tools this token may use. */
function buildServer(auth: Authenticated, notes: Map<string, string[]>) {
  const server = new McpServer({ name: 'gatehouse-example-mcp', version: '0.2.0' });
  const may = (tool: string) => auth.scopes.includes(TOOL_SCOPES[tool]);
  if (may('whoami')) {
    server.registerTool('whoami', { description: 'Who the token is for, and which agent acts for them' }, async (extra) => {
      const a = extra.authInfo as Authenticated;
      // RFC 8693 §4.1: `act` names the agent acting for the user.
      const who = { user: a.claims.sub, client_id: a.clientId, acting_agent: a.claims.act?.sub ?? null, scope: a.scopes.join(' ') };
      return { content: [{ type: 'text', text: JSON.stringify(who) }], structuredContent: who };
    });
  }
  if (may('add_note')) {
    server.registerTool('add_note', { description: "Keeps a note for the token's user", inputSchema: { text: z.string().max(500) } }, async ({ text }, extra) => {
      const sub = (extra.authInfo as Authenticated).claims.sub;
      notes.set(sub, [...(notes.get(sub) ?? []), text]);
      return { content: [{ type: 'text', text: `${notes.get(sub)!.length} notes` }], structuredContent: { notes: notes.get(sub) } };
    });
  }
  return server;
}

export async function startMcpServer(opts: McpServerOptions) {
  const app = express();
  const notes = new Map<string, string[]>();
  const listener = app.listen(opts.port ?? 0, '127.0.0.1');
  await new Promise<void>((resolve, reject) => listener.once('listening', resolve).once('error', reject));
  const url = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`;
  const resource = opts.resource ?? `${url}/mcp`;
  const path = new URL(resource).pathname;

  const verifier = createTokenVerifier({ issuer: opts.issuer, audience: resource, clientId: opts.clientId, clientSecret: opts.clientSecret, cacheSeconds: opts.cacheSeconds });
  const metadata = protectedResourceMetadata({
    resource,
    authorizationServers: opts.issuer,
    scopesSupported: [...new Set(Object.values(TOOL_SCOPES))],
    resourceName: 'Gatehouse example MCP server',
  });

  app.use(metadata.handler);
  app.post(
    path,
    express.json({ limit: '100kb' }),
    bearerAuth<Request>(verifier, { resourceMetadataUrl: metadata.url, requiredScopes: scopesFor }),
    async (req, res) => {
      const server = buildServer((req as Request & { auth: Authenticated }).auth, notes);
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
      res.on('close', () => {
        void transport.close();
        void server.close();
      });
      await server.connect(transport);
      await transport.handleRequest(req, res, req.body);
    },
  );
  // Streamable HTTP: this server answers POSTs with JSON and opens no SSE stream.
  app.all(path, (_req, res) => void res.status(405).set('allow', 'POST').json({ error: 'method_not_allowed' }));

  return {
    url,
    resource,
    close: () => new Promise<void>((r) => listener.close(() => r())),
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
