// The HTTP edge of a protected resource: read the token from the Authorization header (RFC 6750 §2.1,
// or the DPoP scheme, RFC 9449 §7.1), verify it, and turn a refusal into the answer a client can act
// on: 401 with a WWW-Authenticate challenge naming the resource's RFC 9728 metadata (so an MCP client
// finds Gatehouse from it), 403 insufficient_scope naming the scope to step up to, 503 with
// Retry-After when Gatehouse cannot be asked. Framework adapters below are thin wrappers over
// authenticate() and rejectionResponse().
import { TokenRejectedError } from './errors.ts';
import { scopesOf, type AccessTokenClaims, type TokenVerifier } from './verifier.ts';

/** The shape the MCP TypeScript SDK gives tools as `extra.authInfo` (its `AuthInfo`, declared here so the SDK stays optional). */
export interface AuthInfo {
  token: string;
  clientId: string;
  scopes: string[];
  expiresAt?: number;
  resource?: URL;
  extra?: Record<string, unknown>;
}

/** What is known about an authenticated request: the claims, and the same as the MCP SDK's AuthInfo. */
export interface Authenticated extends AuthInfo {
  claims: AccessTokenClaims;
  extra: { claims: AccessTokenClaims; sub: string; actor?: string };
}

export interface AuthenticateOptions {
  /** Where this resource's RFC 9728 metadata is served; named in every 401/403 challenge. */
  resourceMetadataUrl?: string;
  /** Scopes this route needs (on top of the verifier's). */
  requiredScopes?: string[];
}

export interface RequestLike {
  method?: string;
  /** The full URL as the client used it (for DPoP's htu). */
  url?: string;
  authorization?: string | null;
  dpop?: string | null;
}

export interface Rejection {
  status: number;
  headers: Record<string, string>;
  body: { error?: string; error_description: string; scope?: string };
}

/** Verifies the request's token; throws TokenRejectedError (with `error` undefined when there was none). */
export async function authenticate(verifier: TokenVerifier, req: RequestLike, opts: AuthenticateOptions = {}): Promise<Authenticated> {
  const credentials = readAuthorization(req.authorization ?? undefined);
  const claims = await verifier.verify(credentials.token, {
    requiredScopes: opts.requiredScopes,
    request: { scheme: credentials.scheme, proof: req.dpop ?? undefined, method: req.method, url: req.url },
  });
  return toAuthInfo(credentials.token, claims);
}

/** The claims as the MCP SDK's AuthInfo (plus the claims themselves). */
export function toAuthInfo(token: string, claims: AccessTokenClaims): Authenticated {
  const aud = Array.isArray(claims.aud) ? claims.aud[0] : claims.aud;
  let resource: URL | undefined;
  try {
    resource = aud ? new URL(aud) : undefined;
  } catch {
    resource = undefined;
  }
  return {
    token,
    clientId: claims.client_id,
    scopes: scopesOf(claims),
    expiresAt: claims.exp,
    resource,
    claims,
    extra: { claims, sub: claims.sub, actor: claims.act?.sub },
  };
}

function readAuthorization(header: string | undefined): { scheme: string; token: string } {
  const m = /^(Bearer|DPoP)(?: +(.*))?$/i.exec(header?.trim() ?? '');
  // RFC 6750 §3.1: no credentials (or another scheme) → a challenge without an error code.
  if (!m) throw new TokenRejectedError('an access token is required', null);
  const token = m[2] ?? '';
  // RFC 6750 §2.1: b64token syntax; anything else is a malformed request.
  if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(token)) throw new TokenRejectedError('malformed Authorization header', 'invalid_request');
  return { scheme: m[1], token };
}

/** The status, headers and JSON body for a refusal (anything but TokenRejectedError is treated as an outage). */
export function rejectionResponse(err: unknown, opts: { resourceMetadataUrl?: string; dpop?: boolean } = {}): Rejection {
  const e = err instanceof TokenRejectedError ? err : new TokenRejectedError('token cannot be checked right now', 'temporarily_unavailable');
  const body: Rejection['body'] = { ...(e.error ? { error: e.error } : {}), error_description: e.message };
  if (e.status === 503) return { status: 503, headers: { 'retry-after': '5', 'cache-control': 'no-store' }, body: { error: 'temporarily_unavailable', error_description: e.message } };
  if (e.scope) body.scope = e.scope.join(' ');
  const params = [
    ...(e.error ? [`error="${quote(e.error)}"`, `error_description="${quote(e.message)}"`] : []),
    ...(e.scope ? [`scope="${quote(e.scope.join(' '))}"`] : []),
    ...(opts.resourceMetadataUrl ? [`resource_metadata="${quote(opts.resourceMetadataUrl)}"`] : []),
  ];
  const challenges = [`Bearer${params.length ? ` ${params.join(', ')}` : ''}`];
  // RFC 9449 §7.1: a resource that takes DPoP says so, with the algorithms it accepts.
  if (opts.dpop) challenges.push(`DPoP algs="ES256 RS256 PS256 EdDSA"${e.error === 'invalid_dpop_proof' ? `, error="invalid_dpop_proof"` : ''}`);
  return { status: e.status, headers: { 'www-authenticate': challenges.join(', '), 'cache-control': 'no-store' }, body };
}

function quote(s: string) {
  return s.replace(/[\\"]/g, '\\$&').replace(/[\x00-\x1f\x7f]/g, ' ');
}

// ---- Express / Connect / node:http -------------------------------------------------------------

interface NodeRequest {
  method?: string;
  url?: string;
  originalUrl?: string;
  headers: Record<string, string | string[] | undefined>;
  socket?: object;
  protocol?: string;
  auth?: AuthInfo;
  body?: unknown;
}
interface NodeResponse {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(body?: string): unknown;
}

export interface BearerAuthOptions<Req> {
  resourceMetadataUrl?: string;
  /** Scopes needed; a function decides per request (e.g. by the MCP tool being called). */
  requiredScopes?: string[] | ((req: Req) => string[] | undefined);
  /** This server's public origin (`https://tools.example.com`), for DPoP's htu behind a proxy. Default: from the request. */
  publicOrigin?: string;
}

/**
 * Express (or Connect, or plain node:http) middleware: sets `req.auth` (the MCP SDK's AuthInfo, plus
 * `claims`) and calls next(), or answers 401/403/503 itself.
 */
export function bearerAuth<Req extends NodeRequest = NodeRequest>(verifier: TokenVerifier, opts: BearerAuthOptions<Req> = {}) {
  return async function requireAccessToken(req: Req, res: NodeResponse, next: (err?: unknown) => void) {
    const header = (name: string) => {
      const v = req.headers[name];
      return Array.isArray(v) ? v.join(',') : v;
    };
    try {
      const origin = opts.publicOrigin ?? `${req.protocol ?? (req.socket && 'encrypted' in req.socket && req.socket.encrypted ? 'https' : 'http')}://${header('host')}`;
      req.auth = await authenticate(verifier, {
        method: req.method,
        url: new URL(req.originalUrl ?? req.url ?? '/', origin).href,
        authorization: header('authorization'),
        dpop: header('dpop'),
      }, { requiredScopes: typeof opts.requiredScopes === 'function' ? opts.requiredScopes(req) : opts.requiredScopes });
    } catch (err) {
      const r = rejectionResponse(err, { resourceMetadataUrl: opts.resourceMetadataUrl, dpop: Boolean(verifier.dpop) });
      res.statusCode = r.status;
      for (const [k, v] of Object.entries({ ...r.headers, 'content-type': 'application/json' })) res.setHeader(k, v);
      res.end(JSON.stringify(r.body));
      return;
    }
    next();
  };
}

// ---- Koa ---------------------------------------------------------------------------------------

interface KoaContext {
  method: string;
  href: string;
  get(field: string): string;
  status: number;
  body: unknown;
  set(field: string, value: string): void;
  state: Record<string, unknown>;
}

/** Koa middleware: sets `ctx.state.auth` (AuthInfo plus `claims`), or answers 401/403/503 itself. */
export function koaBearerAuth<Ctx extends KoaContext = KoaContext>(verifier: TokenVerifier, opts: BearerAuthOptions<Ctx> = {}) {
  return async function requireAccessToken(ctx: Ctx, next: () => Promise<unknown>) {
    try {
      const url = opts.publicOrigin ? new URL(new URL(ctx.href).pathname + new URL(ctx.href).search, opts.publicOrigin).href : ctx.href;
      ctx.state.auth = await authenticate(verifier, { method: ctx.method, url, authorization: ctx.get('authorization'), dpop: ctx.get('dpop') || undefined }, {
        requiredScopes: typeof opts.requiredScopes === 'function' ? opts.requiredScopes(ctx) : opts.requiredScopes,
      });
    } catch (err) {
      const r = rejectionResponse(err, { resourceMetadataUrl: opts.resourceMetadataUrl, dpop: Boolean(verifier.dpop) });
      ctx.status = r.status;
      for (const [k, v] of Object.entries(r.headers)) ctx.set(k, v);
      ctx.body = r.body;
      return;
    }
    await next();
  };
}
