// Hostile input is refused at the edge, once, in front of oidc-provider and every route of ours:
// the path, every query parameter and every form or JSON body field. Refused with 400
// invalid_request (a page for people) and an audit row that names what was wrong, never a 500 from
// deep inside (PostgreSQL refuses NUL in text, so a NUL that reached a query was a 500 and a lost
// audit row). What is refused, and why:
// - percent-escapes that are malformed or do not decode to UTF-8, and bodies that are not UTF-8
//   (RFC 3986 §2.5 / RFC 3629; a lenient decoder would turn them into U+FFFD and carry on);
// - NUL and other control characters (C0, DEL, C1) in names and values; tab, CR and LF stay allowed
//   only in JSON strings and in the form fields that carry free text (MULTILINE), since every other
//   field is one line (names, room names, emails, codes, URIs);
// - unpaired UTF-16 surrogates (only reachable through JSON \u escapes), which no database stores;
// - names and query values longer than the limits below;
// - a parameter given twice (RFC 6749 §3.1: "Request and response parameters MUST NOT be included
//   more than once"), except those defined as repeatable.
// Field-level rules (formats, lengths of particular fields) stay with the zod schemas of each route.
//
// Bodies: a form or JSON body is read here (within BODY_LIMIT) and left on `req.body`, where
// oidc-provider and src/http/body.ts read it from (see handBodyToProvider there).
import type { Context, Next } from 'koa';
import type { Audit } from '../audit/index.ts';
import { SECRET_KEY } from '../audit/index.ts';
import { InvalidRequest } from './errors.ts';
import { readBodyBytes } from './body.ts';

/** Parameters that may repeat: RFC 8707 resource, RFC 8693 audience, agent_name (DESIGN.md), role checkboxes. */
export const REPEATABLE = new Set(['resource', 'audience', 'agent_name', 'role']);
/** Form fields whose value is free text that may span lines (RFC 8693 exchange: LiveKit metadata). */
export const MULTILINE = new Set(['participant_metadata']);
export const MAX_NAME_CHARS = 128;
/** A query value longer than this is refused: longer values belong in a POST body (or PAR, RFC 9126). */
export const MAX_QUERY_VALUE_CHARS = 8 * 1024;
const MAX_JSON_DEPTH = 32;

export interface InputProblem {
  where: 'path' | 'query' | 'body';
  parameter: string;
  reason: string;
  /** The offending value, made safe to store and show (escaped, cut short); absent for secrets. */
  value?: string;
}

// C0 controls, DEL and C1 controls; `relaxed` lets tab, LF and CR through.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const CONTROL_RELAXED = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** A value as it may be shown and stored: controls and lone surrogates escaped, at most 64 characters. */
export function safeText(s: string, max = 64): string {
  const cut = s.length > max ? `${s.slice(0, max)}…` : s;
  return cut.replace(/[\u0000-\u001f\u007f-\u009f\ud800-\udfff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function textProblem(s: string, relaxed: boolean): string | undefined {
  if (s.includes('\u0000')) return 'contains a NUL character';
  if ((relaxed ? CONTROL_RELAXED : CONTROL).test(s)) return 'contains a control character';
  if (LONE_SURROGATE.test(s)) return 'is not valid Unicode';
  return undefined;
}

function strictDecode(raw: string, plusIsSpace: boolean): string | undefined {
  try {
    return decodeURIComponent(plusIsSpace ? raw.replace(/\+/g, ' ') : raw);
  } catch {
    return undefined;
  }
}

const problem = (where: InputProblem['where'], name: string, reason: string, value?: string): InputProblem => ({
  where, parameter: safeText(name), reason, ...(value !== undefined && !SECRET_KEY.test(name) ? { value: safeText(value) } : {}),
});

/** application/x-www-form-urlencoded (a query string or a form body), checked strictly. */
export function formProblem(text: string, where: 'query' | 'body'): InputProblem | undefined {
  const seen = new Set<string>();
  for (const pair of text.split('&')) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    const rawName = eq < 0 ? pair : pair.slice(0, eq);
    const rawValue = eq < 0 ? '' : pair.slice(eq + 1);
    const name = strictDecode(rawName, true);
    if (name === undefined) return problem(where, rawName, 'has a name that is not valid percent-encoded UTF-8');
    const nameIssue = textProblem(name, false);
    if (nameIssue) return problem(where, name, `has a name that ${nameIssue}`);
    if (name.length > MAX_NAME_CHARS) return problem(where, name, `has a name longer than ${MAX_NAME_CHARS} characters`);
    const value = strictDecode(rawValue, true);
    if (value === undefined) return problem(where, name, 'is not valid percent-encoded UTF-8', rawValue);
    const valueIssue = textProblem(value, where === 'body' && MULTILINE.has(name));
    if (valueIssue) return problem(where, name, valueIssue, value);
    if (where === 'query' && value.length > MAX_QUERY_VALUE_CHARS) return problem(where, name, `is longer than ${MAX_QUERY_VALUE_CHARS} characters`);
    if (seen.has(name) && !REPEATABLE.has(name)) return problem(where, name, 'is given more than once');
    seen.add(name);
  }
  return undefined;
}

/** Each path segment decodes to UTF-8 without control characters. */
export function pathProblem(path: string): InputProblem | undefined {
  const decoded = strictDecode(path, false);
  if (decoded === undefined) return problem('path', 'path', 'is not valid percent-encoded UTF-8', path);
  const issue = textProblem(decoded, false);
  return issue ? problem('path', 'path', issue, decoded) : undefined;
}

/** Every key and string of a parsed JSON body. */
export function jsonProblem(value: unknown, name = 'body', depth = 0): InputProblem | undefined {
  if (depth > MAX_JSON_DEPTH) return problem('body', name, `is nested more than ${MAX_JSON_DEPTH} levels deep`);
  if (typeof value === 'string') {
    const issue = textProblem(value, true);
    return issue ? problem('body', name, issue, value) : undefined;
  }
  if (!value || typeof value !== 'object') return undefined;
  for (const [k, v] of Object.entries(value)) {
    const keyIssue = textProblem(k, false);
    if (keyIssue) return problem('body', k, `has a name that ${keyIssue}`);
    const found = jsonProblem(v, Array.isArray(value) ? name : k, depth + 1);
    if (found) return found;
  }
  return undefined;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const hasBody = (ctx: Context) => Boolean(ctx.get('transfer-encoding')) || Number(ctx.get('content-length') || 0) > 0;

async function bodyProblem(ctx: Context, limit: number): Promise<InputProblem | undefined> {
  if (!hasBody(ctx)) return undefined;
  const kind = ctx.is('application/x-www-form-urlencoded', 'json', '+json');
  if (!kind) return undefined;
  const raw = await readBodyBytes(ctx, limit);
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    return problem('body', 'body', 'is not valid UTF-8');
  }
  // oidc-provider's body reader and src/http/body.ts take a consumed body from here.
  (ctx.req as unknown as { body: string }).body = text;
  if (kind === 'application/x-www-form-urlencoded') return formProblem(text, 'body');
  if (text.trim() === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Each reader answers bad JSON its own way (oidc-provider: invalid_request; ours: readJson).
    return text.includes('\u0000') ? problem('body', 'body', 'contains a NUL character') : undefined;
  }
  return jsonProblem(parsed);
}

/** Paths of pages people open: a refusal there is an HTML page, elsewhere JSON. */
const PAGE = /^\/(interaction|account|password|device|session|admin(?!\/api)|federation|auth)(\/|$)/;

export function rejectHostileInput(deps: { audit: Audit; bodyLimit: number }) {
  return async function refuseHostileInput(ctx: Context, next: Next) {
    const found = pathProblem(ctx.path) ?? formProblem(ctx.querystring, 'query') ?? (await bodyProblem(ctx, deps.bodyLimit));
    if (!found) return next();
    if (PAGE.test(ctx.path) && ctx.accepts('json', 'html') === 'html') ctx.state.html = true;
    // Awaited: the refusal is on record before it is answered. The audit writer makes every text safe.
    await deps.audit.record({
      type: 'request.refused', outcome: 'failure', ip: ctx.ip, requestId: ctx.state.requestId,
      details: { method: ctx.method, path: safeText(ctx.path, 256), ...found },
    });
    const label = found.where === 'path' ? 'the request path' : `${found.where} parameter "${found.parameter}"`;
    throw new InvalidRequest(`${label} ${found.reason}`);
  };
}
