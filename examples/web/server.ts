// Serves the example frontend (examples/web): index.html with its settings, and app.ts bundled by
// esbuild on request (with @gatehouse/web from its source). No build step to run by hand.
//
//   gatehouse client create --type public --name "Web example" --redirect-uri http://127.0.0.1:5173/ \
//     --post-logout-redirect-uri http://127.0.0.1:5173/
//   gatehouse policy client set <client_id> --livekit
//   npm start                                                         # Gatehouse, in another terminal
//   GATEHOUSE_ISSUER=http://127.0.0.1:3000 WEB_CLIENT_ID=<client_id> npx tsx examples/web/server.ts
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const HERE = fileURLToPath(new URL('.', import.meta.url));

export interface WebExampleOptions {
  issuer?: string;
  clientId?: string;
  /** Dispatch this LiveKit agent with the connection details. */
  agentName?: string;
  port?: number;
}

export async function startWebExample(opts: WebExampleOptions = {}) {
  let settings = { issuer: opts.issuer, clientId: opts.clientId, agentName: opts.agentName };
  let bundle: Promise<string> | undefined;
  const app = () => (bundle ??= build({
    entryPoints: [`${HERE}app.ts`],
    bundle: true,
    write: false,
    format: 'esm',
    target: 'es2022',
    alias: { '@gatehouse/web': fileURLToPath(new URL('../../packages/web/src/index.ts', import.meta.url)) },
  }).then((r) => r.outputFiles[0].text));

  const server = http.createServer(async (req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const security = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' };
    if (path === '/app.js') {
      res.writeHead(200, { ...security, 'content-type': 'text/javascript' }).end(await app());
    } else if (path === '/') {
      // JSON inside <script type="application/json">: "<" escaped so the settings cannot close the tag.
      const html = fs.readFileSync(`${HERE}index.html`, 'utf8').replace('__CONFIG__', JSON.stringify(settings).replace(/</g, '\\u003c'));
      res.writeHead(200, { ...security, 'content-type': 'text/html; charset=utf-8' }).end(html);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  });
  await new Promise<void>((r) => server.listen(opts.port ?? 0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    /** Settings can be given once Gatehouse is up (its client needs this server's origin as redirect URI first). */
    configure(next: Omit<WebExampleOptions, 'port'>) {
      settings = { ...settings, ...next };
    },
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

if (process.argv[1]?.endsWith('server.ts')) {
  const s = await startWebExample({
    issuer: process.env.GATEHOUSE_ISSUER ?? 'http://127.0.0.1:3000',
    clientId: process.env.WEB_CLIENT_ID ?? (() => { throw new Error('WEB_CLIENT_ID is required'); })(),
    agentName: process.env.AGENT_NAME,
    port: Number(process.env.PORT ?? 5173),
  });
  console.log(`web example on ${s.url}`);
}
