// MCP hosts often send an authorization request with only `resource=` and no `scope` (the MCP
// authorization spec leaves scope optional), and OIDC libraries send `scope=openid` alone. The one
// scope rule (docs/authorization.md) gives a request that names none of a resource's scopes that
// resource's default scopes; they are added here, to the authorization, PAR or device request, so
// consent asks for them and the code carries them. A request without `scope` also gets
// DEFAULT_SCOPE (default `openid`). At the token endpoint the rule still intersects with the user's
// permissions and consent (src/oidc/provider.ts).
import type { Context, Next } from 'koa';
import type { Config } from '../config/index.ts';
import type { Resources } from './resources.ts';
import { handBodyToProvider, readRawBody } from '../http/body.ts';

const FORM_LIMIT = 56 * 1024; // oidc-provider's own body limit
const BODY_ROUTES = new Set(['/auth', '/request', '/device/auth']);


export function defaultScope(deps: { config: Config; resources: Resources }) {
  /** The request's scope plus, for each registered resource it names none of, its defaults. */
  async function scopeFor(requested: string | null, resources: string[]): Promise<string> {
    const scopes = new Set(requested === null ? deps.config.DEFAULT_SCOPE.split(' ') : requested.split(' ').filter(Boolean));
    for (const uri of resources) {
      const rs = await deps.resources.findResource(uri).catch(() => undefined);
      if (!rs || rs.scopes.some((s) => scopes.has(s))) continue;
      for (const s of rs.defaultScopes ?? rs.scopes) scopes.add(s);
    }
    return [...scopes].join(' ');
  }

  return async function assignDefaultScope(ctx: Context, next: Next) {
    if (ctx.method === 'GET' && ctx.path === '/auth') {
      const params = new URLSearchParams(ctx.querystring);
      // A request object (JAR) or PAR reference carries its own parameters: leave it alone.
      if (!params.has('request') && !params.has('request_uri') && params.has('client_id') && (!params.has('scope') || params.has('resource'))) {
        params.set('scope', await scopeFor(params.get('scope'), params.getAll('resource')));
        ctx.querystring = params.toString();
      }
      return next();
    }
    if (ctx.method === 'POST' && BODY_ROUTES.has(ctx.path) && ctx.is('application/x-www-form-urlencoded')) {
      const raw = await readRawBody(ctx, FORM_LIMIT);
      const params = new URLSearchParams(raw);
      const own = !params.has('request') && !params.has('request_uri') && (!params.has('scope') || params.has('resource'));
      if (own) params.set('scope', await scopeFor(params.get('scope'), params.getAll('resource')));
      handBodyToProvider(ctx, own ? params.toString() : raw);
    }
    return next();
  };
}
