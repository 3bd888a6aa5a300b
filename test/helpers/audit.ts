// Audit-log assertions shared by the suites: no token, whole or in part, is ever written there.
import { expect } from 'vitest';
import type { TestGatehouse } from './gatehouse.ts';

/** Fails if any of `tokens` (or a JWT's payload or signature alone) appears in any audit event. */
export async function expectNoTokensInAudit(gh: TestGatehouse, tokens: Iterable<string>): Promise<void> {
  const { rows } = await gh.deps.db.query<{ text: string }>('SELECT row_to_json(a)::text AS text FROM audit_events a');
  const log = rows.map((r) => r.text).join('\n');
  for (const token of tokens) {
    const parts = token.split('.');
    for (const piece of new Set([token, ...(parts.length === 3 ? [parts[1], parts[2]] : [])])) {
      expect(log.includes(piece), `audit log contains a token (${token.slice(0, 12)}…)`).toBe(false);
    }
  }
}
