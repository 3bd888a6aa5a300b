// Gatehouse's own account pages are a client of Gatehouse (src/account/router.ts explains why).
import type { Config } from '../config/index.ts';

export const ACCOUNT_CLIENT_ID = 'gatehouse-account';

/** oidc-provider static client metadata for the account pages (redirects back to this issuer only). */
export function accountClient(config: Config) {
  return {
    client_id: ACCOUNT_CLIENT_ID,
    client_name: 'Your Gatehouse account',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [new URL('/account/callback', config.ISSUER).href],
    post_logout_redirect_uris: [new URL('/account', config.ISSUER).href],
    first_party: true,
  };
}

