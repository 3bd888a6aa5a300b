// MCP hosts often send an authorization request with only `resource=` and no `scope` (the MCP
// authorization spec leaves scope optional). oidc-provider would then grant nothing useful, so an
// authorization, PAR or device request without `scope` gets the documented default instead:
// DEFAULT_SCOPE (default `openid`) plus, for each registered `resource`, that resource's scopes.
// Consent still shows every one of them, and token exchange still intersects with the user's
// permissions.
import type { Context, Next } from 'koa';
import type { Config } from '../config/index.ts';
import type { Resources } from './resources.ts';
import { handBodyToProvider, readRawBody } from '../http/body.ts';

const FORM_LIMIT = 56 * 1024; // oidc-provider's own body limit
const BODY_ROUTES = new Set(['/auth', '/request', '/device/auth']);


export function defaultScope(deps: { config: Config; resources: Resources }) {
  async function scopeFor(resources: string[]): Promise<string> {
    const scopes = new Set(deps.config.DEFAULT_SCOPE.split(' '));
    for (const uri of resources) {
      const rs = await deps.resources.findResource(uri).catch(() => undefined);
      for (const s of rs?.scopes ?? []) scopes.add(s);
    }
    return [...scopes].join(' ');
  }

  return async function assignDefaultScope(ctx: Context, next: Next) {
    if (ctx.method === 'GET' && ctx.path === '/auth') {
      const params = new URLSearchParams(ctx.querystring);
      // A request object (JAR) or PAR reference carries its own parameters: leave it alone.
      if (!params.has('scope') && !params.has('request') && !params.has('request_uri') && params.has('client_id')) {
        params.set('scope', await scopeFor(params.getAll('resource')));
        ctx.querystring = params.toString();
      }
      return next();
    }
    if (ctx.method === 'POST' && BODY_ROUTES.has(ctx.path) && ctx.is('application/x-www-form-urlencoded')) {
      const raw = await readRawBody(ctx, FORM_LIMIT);
      const params = new URLSearchParams(raw);
      const missing = !params.has('scope') && !params.has('request') && !params.has('request_uri');
      if (missing) params.set('scope', await scopeFor(params.getAll('resource')));
      handBodyToProvider(ctx, missing ? params.toString() : raw);
    }
    return next();
  };
}
