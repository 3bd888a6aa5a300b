// Prometheus metrics (prom-client) at GET /metrics: request counts and latencies per route, every
// audit event by type and outcome (logins, exchanges, revocations, rate-limit refusals...), whether
// the revocation store can answer, and Node's process metrics. One registry per app, so several
// apps in one process (the tests) never share counters.
//
// Who may read it: with METRICS_TOKEN set, a caller presenting `Authorization: Bearer <token>`;
// without it, only callers on the loopback interface (a scraper on the same host or a sidecar).
// Labels never carry an identifier: route labels replace ids with `:id`, unknown paths are `unmatched`.
import crypto from 'node:crypto';
import type { Context, Next } from 'koa';
import client from 'prom-client';
import type { Audit } from '../audit/index.ts';
import type { ChangeFeed } from '../store/changes.ts';

const ID_FREE_SEGMENT = /^\.?[a-z][a-z._-]{0,39}$/;
const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1']);

/**
 * A low-cardinality route label: segments that look like ids (digits, mixed case, long random
 * strings) become `:id`, so /interaction/AbC9…/login and /reg/gh_x1… stay one series each.
 */
export function routeLabel(path: string, status: number): string {
  if (status === 404) return 'unmatched';
  const segments = path.split('/').filter(Boolean).slice(0, 6);
  return `/${segments.map((s) => (ID_FREE_SEGMENT.test(s) ? s : ':id')).join('/')}`;
}

export interface MetricsOptions {
  /** METRICS_TOKEN: a scraper's bearer token; unset → loopback callers only. */
  token?: string;
  /** Gauges read at scrape time. */
  revocationReady: () => Promise<void>;
  info: { mode: string; store: string };
  /** The in-process caches and the feed that keeps them current (src/store/changes.ts). */
  changes?: Pick<ChangeFeed, 'listening' | 'received' | 'caches'>;
  /** SQL statements sent so far (BEGIN and COMMIT count). */
  dbStatements?: () => number;
}

export function createMetrics(opts: MetricsOptions) {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'gatehouse_' });

  const requests = new client.Counter({
    name: 'gatehouse_http_requests_total', help: 'HTTP requests answered, by method, route and status.',
    labelNames: ['method', 'route', 'status'] as const, registers: [registry],
  });
  const duration = new client.Histogram({
    name: 'gatehouse_http_request_duration_seconds', help: 'Time to answer an HTTP request, by method and route.',
    labelNames: ['method', 'route'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [registry],
  });
  const auditEvents = new client.Counter({
    name: 'gatehouse_audit_events_total', help: 'Audit events recorded, by type and outcome (login, token.exchange, rate_limit, ...).',
    labelNames: ['type', 'outcome'] as const, registers: [registry],
  });
  new client.Gauge({
    name: 'gatehouse_revocation_store_up', help: '1 when revocation decisions can be made (Redis reachable and loaded), 0 while they fail closed.',
    registers: [registry],
    async collect() {
      this.set(await opts.revocationReady().then(() => 1, () => 0));
    },
  });
  new client.Gauge({
    name: 'gatehouse_info', help: 'Always 1; the labels say how this process runs.',
    labelNames: ['mode', 'store'] as const, registers: [registry],
  }).set(opts.info, 1);

  const { changes, dbStatements } = opts;
  if (dbStatements) {
    new client.Counter({
      name: 'gatehouse_db_statements_total', help: 'SQL statements sent to PostgreSQL / PGlite (each a round trip; BEGIN and COMMIT count).',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(dbStatements());
      },
    });
  }
  if (changes) {
    new client.Counter({
      name: 'gatehouse_cache_lookups_total', help: 'Lookups of the in-process caches (clients, policies, resources, users), by cache and result (hit, miss).',
      labelNames: ['cache', 'result'] as const, registers: [registry],
      collect() {
        this.reset();
        for (const c of changes.caches) {
          this.inc({ cache: c.name, result: 'hit' }, c.hits);
          this.inc({ cache: c.name, result: 'miss' }, c.misses);
        }
      },
    });
    new client.Counter({
      name: 'gatehouse_cache_changes_received_total', help: 'Change notifications received from the database (each drops cache entries on this node).',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(changes.received);
      },
    });
    new client.Gauge({
      name: 'gatehouse_cache_listening', help: '1 while this node hears changes and answers lookups from memory; 0 while every lookup reads the database.',
      registers: [registry],
      collect() {
        this.set(changes.listening ? 1 : 0);
      },
    });
  }

  const expected = opts.token ? Buffer.from(`Bearer ${opts.token}`) : undefined;
  function mayRead(ctx: Context): boolean {
    if (!expected) return LOOPBACK.has(ctx.ip);
    const given = Buffer.from(ctx.get('authorization'));
    return given.length === expected.length && crypto.timingSafeEqual(given, expected);
  }

  return {
    registry,
    /** Counts every request (outermost middleware, so errors and 429s are counted with their status). */
    measure() {
      return async function measureRequest(ctx: Context, next: Next) {
        const stop = duration.startTimer();
        const path = ctx.path; // before any middleware rewrites it
        try {
          await next();
        } finally {
          const route = routeLabel(path, ctx.status);
          stop({ method: ctx.method, route });
          requests.inc({ method: ctx.method, route, status: String(ctx.status) });
        }
      };
    },
    /** GET /metrics in the Prometheus text format. */
    serve() {
      return async function serveMetrics(ctx: Context, next: Next) {
        if (ctx.path !== '/metrics' || (ctx.method !== 'GET' && ctx.method !== 'HEAD')) return next();
        ctx.set('Cache-Control', 'no-store');
        if (!mayRead(ctx)) {
          ctx.status = expected ? 401 : 403;
          if (expected) ctx.set('WWW-Authenticate', 'Bearer realm="metrics"');
          ctx.body = { error: expected ? 'invalid_token' : 'access_denied', error_description: expected ? 'a valid metrics bearer token is required' : 'metrics are served to loopback callers only; set METRICS_TOKEN to scrape from elsewhere' };
          return;
        }
        ctx.type = registry.contentType;
        ctx.body = await registry.metrics();
      };
    },
    /** The audit writer, counting each event it records. */
    countAudit(audit: Audit): Audit {
      return {
        async record(event) {
          auditEvents.inc({ type: event.type, outcome: event.outcome ?? 'success' });
          return audit.record(event);
        },
      };
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
