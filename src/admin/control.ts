// The local-only control channel for the CLI in embedded mode. PGlite admits one process at a time,
// so while the server runs, `gatehouse <command>` sends its argv over a Unix socket in DATA_DIR
// (mode 0600: only the user who runs the server can use it) and the server runs the same command.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { CommandError, runCommand } from './commands.ts';
import { serveControlImport } from './import-command.ts';
import type { Deps } from '../app.ts';
import type { Logger } from '../http/log.ts';

export const controlSocketPath = (dataDir: string) => path.join(dataDir, 'control.sock');

export async function startControlServer(deps: Parameters<typeof runCommand>[0], dataDir: string, log: Logger, after?: (argv: string[]) => Promise<void>) {
  const socket = controlSocketPath(dataDir);
  fs.rmSync(socket, { force: true });
  const server = http.createServer((req, res) => {
    // `user import FILE`: the file streams in as the body (it may be far larger than a command).
    if (req.method === 'POST' && req.url === '/import') {
      serveControlImport(deps, req).then(
        ({ status, body }) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
        (err) => {
          log.error({ err }, 'control import failed');
          res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'import failed; see the server log' }));
        },
      );
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 64 * 1024) req.destroy();
      else chunks.push(c);
    });
    req.on('end', async () => {
      const reply = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      try {
        if (req.method !== 'POST' || req.url !== '/command') return reply(404, { error: 'not_found' });
        const { argv } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { argv: string[] };
        if (!Array.isArray(argv) || !argv.every((a) => typeof a === 'string')) return reply(400, { error: 'argv must be strings' });
        const result = await runCommand(deps, argv);
        await after?.(argv);
        reply(200, { result });
      } catch (err) {
        // The mistake's own status (400, 404, 409): the CLI turns it into its exit code.
        if (err instanceof CommandError) return reply(err.status, { error: err.message });
        log.error({ err }, 'control command failed');
        reply(500, { error: 'command failed; see the server log' });
      }
    });
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(socket, resolve));
  fs.chmodSync(socket, 0o600);
  return async () => {
    await new Promise<void>((r) => server.close(() => r()));
    fs.rmSync(socket, { force: true });
  };
}

/** Send argv to a running embedded server. Resolves undefined when no server is listening. */
export function sendControlCommand(dataDir: string, argv: string[]): Promise<{ status: number; body: { result?: unknown; error?: string } } | undefined> {
  const socketPath = controlSocketPath(dataDir);
  if (!fs.existsSync(socketPath)) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: '/command', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 500, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      // A stale socket from a server that died: nobody is listening, so the CLI opens the data itself.
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(undefined);
      else reject(err);
    });
    req.end(JSON.stringify({ argv }));
  });
}

/** `user import FILE` to a running embedded server: argv in a header, the file as the body. Undefined when none listens. */
export function sendControlImport(dataDir: string, argv: string[], file: () => Readable): Promise<{ status: number; body: { result?: unknown; error?: string } } | undefined> {
  const socketPath = controlSocketPath(dataDir);
  if (!fs.existsSync(socketPath)) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: '/import', method: 'POST', headers: { 'content-type': 'application/octet-stream', 'x-gatehouse-argv': encodeURIComponent(JSON.stringify(argv)) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 500, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
    });
    let sent = false;
    req.on('error', (err: NodeJS.ErrnoException) => {
      // No server behind a stale socket: nothing was sent, the CLI opens the data itself.
      if (!sent && (err.code === 'ECONNREFUSED' || err.code === 'ENOENT')) resolve(undefined);
      else reject(err);
    });
    req.on('socket', (socket) => socket.on('connect', () => {
      sent = true;
      file().on('error', (err) => req.destroy(err)).pipe(req);
    }));
  });
}

export type { Deps };
