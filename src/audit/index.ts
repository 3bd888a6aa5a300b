// Audit events: every authentication event and admin action, with actor, subject, client, IP and
// time. Callers pass identifiers and outcomes only; `details` is scrubbed of anything secret-looking
// as a second line of defence.
import type { Queryable } from '../store/db.ts';
import type { Logger } from '../http/log.ts';

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

const SECRET_KEY = /pass(word)?|secret|token|code_verifier|^code$|assertion|otp|recovery|cookie|authorization/i;

export function scrub(value: unknown, depth = 0): unknown {
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? '[redacted]' : scrub(v, depth + 1);
  return out;
}

export function createAudit(db: Queryable, log: Logger): Audit {
  return {
    async record(e) {
      try {
        await db.query(
          `INSERT INTO audit_events (type, outcome, actor, subject, client_id, ip, request_id, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
          [e.type, e.outcome ?? 'success', e.actor ?? null, e.subject ?? null, e.clientId ?? null, e.ip ?? null,
            e.requestId ?? null, JSON.stringify(scrub(e.details ?? {}))],
        );
      } catch (err) {
        // Auditing must not take the request down with it, but it must be visible.
        log.error({ err, auditType: e.type }, 'audit write failed');
      }
    },
  };
}
