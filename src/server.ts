// Start a Gatehouse server: assemble dependencies, build the app, listen, and return a handle that
// shuts everything down in order. main.ts and the tests both use this.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadConfig, type Config } from './config/index.ts';
import { createLogger, type Logger } from './http/log.ts';
import { assemble, createApp, type Deps, type GatehouseApp } from './app.ts';
import { startControlServer } from './admin/control.ts';
import { startIdleCollection } from './http/idle-gc.ts';

export interface RunningGatehouse {
  url: string;
  config: Config;
  deps: Deps;
  gh: GatehouseApp;
  server: http.Server;
  /** A one-time admin password, when one was generated at this start. */
  generatedAdmin?: { email: string; password: string };
  warnings: string[];
  stop(): Promise<void>;
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  log?: Logger;
  /** Keep PGlite in memory (tests). */
  memoryDb?: boolean;
  /** Listen on this port; 0 picks a free one and ISSUER follows it unless set. */
  port?: number;
  controlSocket?: boolean;
}

export async function startGatehouse(opts: StartOptions = {}): Promise<RunningGatehouse> {
  const env = { ...(opts.env ?? process.env) };
  // Validate before binding anything, so a bad value names its variable and nothing listens.
  const early = loadConfig(env);
  // Bound before the app exists (so port 0 can pick the issuer's port): answer 503 until it is ready.
  let handler: http.RequestListener = (_req, res) => {
    res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end('{"error":"temporarily_unavailable","error_description":"starting"}');
  };
  const idle = startIdleCollection();
  const server = http.createServer((req, res) => {
    idle.served();
    handler(req, res);
  });
  const port = opts.port ?? early.PORT;
  const host = early.HOST;
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  const actualPort = (server.address() as AddressInfo).port;
  if (!env.ISSUER) env.ISSUER = `http://${host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host}:${actualPort}`;
  env.PORT = String(actualPort);
  try {
    const config = loadConfig(env);
    const log = opts.log ?? createLogger(config.LOG_LEVEL);
    const deps = await assemble(config, log, { memoryDb: opts.memoryDb });
    const generated = await deps.accounts.ensureFirstAdmin({ email: config.ADMIN_EMAIL, password: config.ADMIN_PASSWORD });
    const gh = await createApp(deps);
    handler = gh.app.callback();
    const stopControl = opts.controlSocket && config.embedded
      ? await startControlServer(deps, config.DATA_DIR, log, async (argv) => {
        if (argv[0] === 'keys') await gh.refreshKeys();
      })
      : undefined;
    let stopped: Promise<void> | undefined;
    return {
      url: config.ISSUER,
      config,
      deps,
      gh,
      server,
      warnings: deps.warnings,
      generatedAdmin: generated && 'password' in generated && generated.password ? { email: generated.email, password: generated.password } : undefined,
      stop() {
        stopped ??= (async () => {
          // Drain: no new connections; requests in flight finish and are answered (their
          // transactions and audit rows written), then the pools close. A keep-alive connection
          // is closed as soon as it is idle, not left to hold the process until its timeout.
          gh.drain();
          idle.stop();
          await stopControl?.();
          const closed = new Promise<void>((r) => server.close(() => r()));
          server.closeIdleConnections();
          const sweep = setInterval(() => server.closeIdleConnections(), 50);
          await closed.finally(() => clearInterval(sweep));
          await gh.close();
          await deps.close();
        })();
        return stopped;
      },
    };
  } catch (err) {
    idle.stop();
    server.close();
    throw err;
  }
}
