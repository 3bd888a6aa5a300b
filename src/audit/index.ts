// Audit events: every authentication event and admin action, with actor, subject, client, IP and
// time. Callers pass identifiers and outcomes only; `details` is scrubbed of anything secret-looking
// as a second line of defence.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Queryable } from '../store/db.ts';
import type { Logger } from '../http/log.ts';
import { isUnavailable } from '../store/errors.ts';

export interface AuditEvent {
  type: string;
  outcome?: 'success' | 'failure';
  actor?: string | null;
  subject?: string | null;
  clientId?: string | null;
  ip?: string | null;
  requestId?: string | null;
  details?: Record<string, unknown>;
}

export interface Audit {
  record(event: AuditEvent): Promise<void>;
}

export const SECRET_KEY = /pass(word)?|secret|token|code_verifier|^code$|assertion|otp|recovery|cookie|authorization/i;

export function scrub(value: unknown, depth = 0): unknown {
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? '[redacted]' : scrub(v, depth + 1);
  return out;
}

const MAX_TEXT = 2048;

/**
 * Any text a caller passes, made storable: PostgreSQL refuses NUL in text and jsonb (and unpaired
 * surrogates in jsonb), which would lose the whole row, so NUL is written as the visible escape `\u0000`,
 * an unpaired surrogate as U+FFFD, and anything longer than 2048 characters is cut.
 */
export function storable(s: string): string {
  const cut = s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT)}…` : s;
  return cut.replace(/\u0000/g, '\\u0000').replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

function storableDeep(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return storable(value);
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.slice(0, 100).map((v) => storableDeep(v, depth + 1));
  return Object.fromEntries(Object.entries(value).slice(0, 100).map(([k, v]) => [storable(k), storableDeep(v, depth + 1)]));
}

const text = (v: string | null | undefined) => (v == null ? null : storable(String(v)));

/** Audit writes started while a request runs, so the request can wait for them (see withAuditWrites). */
const started = new AsyncLocalStorage<Set<Promise<void>>>();

/**
 * Run `fn` (a request), then wait for the audit writes it started. Callers record without awaiting
 * (`void audit.record(...)`) so a slow audit never slows the flow's own steps, but the response is
 * only sent once they are written: a process killed right after answering has lost none of them.
 */
export async function withAuditWrites<T>(fn: () => Promise<T>): Promise<T> {
  const writes = new Set<Promise<void>>();
  try {
    return await started.run(writes, fn);
  } finally {
    if (writes.size) await Promise.all(writes);
  }
}

/** Rows per INSERT. */
const MAX_BATCH = 200;

/**
 * Events recorded while a write is in flight go together in the next one: one multi-row INSERT
 * (one round trip) for however many requests finished meanwhile, instead of one each. A caller's
 * promise still resolves only once its own row is written (see withAuditWrites).
 */
export function createAudit(db: Queryable, log: Logger): Audit {
  let queue: { event: AuditEvent; done: () => void }[] = [];
  let writing = false;

  async function drain() {
    writing = true;
    try {
      while (queue.length) {
        const batch = queue.slice(0, MAX_BATCH);
        queue = queue.slice(batch.length);
        await insert(db, log, batch.map((b) => b.event));
        for (const b of batch) b.done();
      }
    } finally {
      writing = false;
    }
  }

  return {
    record(e) {
      const write = new Promise<void>((done) => {
        queue.push({ event: e, done });
      });
      // The first event waits one turn of the event loop for others finishing at the same moment.
      if (!writing && queue.length === 1) setImmediate(() => void drain());
      started.getStore()?.add(write);
      return write;
    },
  };
}

const row = (e: AuditEvent) => [storable(e.type), e.outcome ?? 'success', text(e.actor), text(e.subject), text(e.clientId), text(e.ip),
  text(e.requestId), JSON.stringify(storableDeep(scrub(e.details ?? {})))];

const COLUMNS = ['type', 'outcome', 'actor', 'subject', 'client_id', 'ip', 'request_id', 'details'];
const INSERT_BATCH = `INSERT INTO audit_events (${COLUMNS.join(', ')})
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[])`;

async function insert(db: Queryable, log: Logger, events: AuditEvent[]): Promise<void> {
  try {
    // One array per column: the same eight parameters and the same statement text whatever the
    // batch size (a VALUES list of 8 × n parameters costs PGlite a third more to parse and bind).
    const rows = events.map(row);
    await db.query(INSERT_BATCH, COLUMNS.map((_, c) => rows.map((r) => r[c])));
  } catch (err) {
    // One bad row must not lose the others: write them one by one (unless the database is down,
    // which every row would wait out in turn).
    if (events.length > 1 && !isUnavailable(err)) {
      for (const e of events) await insert(db, log, [e]);
      return;
    }
    // Auditing must not take the request down with it, but it must be visible.
    for (const e of events) log.error({ err, auditType: e.type }, 'audit write failed');
  }
}
