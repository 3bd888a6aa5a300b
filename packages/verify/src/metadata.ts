// OAuth 2.0 Protected Resource Metadata (RFC 9728): the document that tells a client (an MCP host,
// say) which authorization server issues tokens for this resource and which scopes it knows. The
// 401 challenge names its URL (§5.1), so a client that knows only the resource finds Gatehouse.

export interface ProtectedResourceOptions {
  /** The resource URI exactly as registered in Gatehouse (also the tokens' `aud`). */
  resource: string;
  /** Gatehouse's issuer URL (or several authorization servers). */
  authorizationServers: string | string[];
  /** The scopes this resource's operations need (`scopes_supported`). */
  scopesSupported?: string[];
  /** A human-readable name, shown by some clients. */
  resourceName?: string;
  /** Advertise that tokens must be DPoP-bound (RFC 9449 §5.2 `dpop_bound_access_tokens_required`). */
  dpopRequired?: boolean;
  /** More members for the document (e.g. `resource_documentation`). */
  extra?: Record<string, unknown>;
}

export interface ProtectedResourceMetadata {
  /** RFC 9728 §3.1: `/.well-known/oauth-protected-resource` with the resource's path appended. */
  path: string;
  /** The absolute URL of the document, for `resource_metadata` in challenges. */
  url: string;
  document: Record<string, unknown>;
  /** node:http / Express / Connect handler: answers GET on `path` (and the bare well-known path), else calls next(). */
  handler(req: { method?: string; url?: string }, res: { statusCode: number; setHeader(k: string, v: string): unknown; end(b?: string): unknown }, next?: () => void): void;
  /** Koa middleware doing the same. */
  koa(ctx: { method: string; path: string; body: unknown; set(k: string, v: string): void }, next: () => Promise<unknown>): Promise<unknown>;
}

const WELL_KNOWN = '/.well-known/oauth-protected-resource';

export function protectedResourceMetadata(o: ProtectedResourceOptions): ProtectedResourceMetadata {
  const resource = new URL(o.resource);
  const suffix = resource.pathname === '/' ? '' : resource.pathname.replace(/\/$/, '');
  const path = `${WELL_KNOWN}${suffix}`;
  const document = {
    resource: o.resource,
    authorization_servers: Array.isArray(o.authorizationServers) ? o.authorizationServers : [o.authorizationServers],
    ...(o.scopesSupported ? { scopes_supported: o.scopesSupported } : {}),
    bearer_methods_supported: ['header'],
    ...(o.resourceName ? { resource_name: o.resourceName } : {}),
    ...(o.dpopRequired ? { dpop_bound_access_tokens_required: true, dpop_signing_alg_values_supported: ['ES256', 'RS256', 'PS256', 'EdDSA'] } : {}),
    ...o.extra,
  };
  const body = JSON.stringify(document);
  // The bare well-known path too, for clients that do not append the resource's path.
  const serves = (method: string | undefined, p: string) => (method === 'GET' || method === 'HEAD') && (p === path || p === WELL_KNOWN);
  return {
    path,
    url: new URL(path, resource.origin).href,
    document,
    handler(req, res, next) {
      const p = (req.url ?? '').split('?')[0];
      if (!serves(req.method, p)) {
        if (next) return next();
        res.statusCode = 404;
        res.end();
        return;
      }
      res.statusCode = 200;
      res.setHeader('content-type', 'application/json');
      // Public and the same for everyone: clients may cache it a little and read it cross-origin.
      res.setHeader('cache-control', 'public, max-age=300');
      res.setHeader('access-control-allow-origin', '*');
      res.end(body);
    },
    async koa(ctx, next) {
      if (!serves(ctx.method, ctx.path)) return next();
      ctx.set('cache-control', 'public, max-age=300');
      ctx.set('access-control-allow-origin', '*');
      ctx.body = document;
    },
  };
}
