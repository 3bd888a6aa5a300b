// The page a person sees who opens the issuer's URL in a browser (issue 18): what this server is,
// where to sign in and manage the account, the admin console for those allowed in, and for
// developers the discovery document and the docs. Before it, `/` answered "Not Found".
import Router from '@koa/router';
import type Provider from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Accounts } from '../accounts/users.ts';
import { renderView } from '../interaction/router.ts';
import { adminScopesForPermissions } from '../admin/api-scopes.ts';
import { sessionAccountId } from './router.ts';

export interface FrontDoorDeps {
  provider: () => Provider;
  config: Pick<Config, 'ISSUER'>;
  accounts: Pick<Accounts, 'findUserById' | 'rolesAndPermissions'>;
}

export function createFrontDoor(deps: FrontDoorDeps) {
  const router = new Router();
  router.get('/', async function showFrontDoor(ctx) {
    const id = await sessionAccountId(deps.provider(), ctx);
    const user = id ? await deps.accounts.findUserById(id) : undefined;
    // The console link only for someone whose roles let them in (the console checks again itself).
    const admin = user ? adminScopesForPermissions((await deps.accounts.rolesAndPermissions(user.id)).permissions).length > 0 : false;
    ctx.set('Cache-Control', 'no-store');
    ctx.type = 'html';
    ctx.body = renderView('front-door', {
      title: 'Sign-in service',
      issuer: deps.config.ISSUER,
      discovery: `${deps.config.ISSUER}/.well-known/openid-configuration`,
      user,
      admin,
    });
  });
  return router;
}
