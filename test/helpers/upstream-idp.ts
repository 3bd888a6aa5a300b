// An "enterprise IdP" for the federation tests (issue 4): a plain oidc-provider on a random loopback
// port, with its own users and a minimal interaction handler that signs in whoever the test chose
// (or denies, as a user pressing Cancel would). Its cookies have their own names so they do not
// collide with Gatehouse's in the test browser's jar (cookies ignore ports).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';
import type { Browser } from './gatehouse.ts';

export interface UpstreamUser {
  sub: string;
  email?: string;
  email_verified?: boolean;
  name?: string;
  groups?: string[];
}

export interface UpstreamIdp {
  issuer: string;
  provider: Provider;
  users: Map<string, UpstreamUser>;
  /** Who the next sign-in at this IdP is (by sub), with which amr; or deny it. */
  next: { sub?: string; amr?: string[]; deny?: boolean };
  close(): Promise<void>;
}

export async function startUpstreamIdp(opts: { redirectUri: string; postLogoutRedirectUri?: string; clientId?: string; clientSecret?: string }): Promise<UpstreamIdp> {
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const users = new Map<string, UpstreamUser>();
  const next: UpstreamIdp['next'] = {};
  const provider = new Provider(issuer, {
    clients: [{
      client_id: opts.clientId ?? 'gatehouse',
      client_secret: opts.clientSecret ?? 'upstream-secret-upstream-secret-123',
      redirect_uris: [opts.redirectUri],
      post_logout_redirect_uris: opts.postLogoutRedirectUri ? [opts.postLogoutRedirectUri] : [],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    cookies: {
      keys: ['upstream-cookie-key'],
      names: { session: '_up_session', interaction: '_up_interaction', resume: '_up_interaction_resume' },
    },
    claims: { amr: null, openid: ['sub', 'amr'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] } as never,
    scopes: ['openid', 'email', 'profile', 'groups'],
    features: { devInteractions: { enabled: false }, rpInitiatedLogout: { enabled: true } },
    pkce: { required: () => true },
    async findAccount(_ctx, sub) {
      const user = users.get(sub);
      if (!user) return undefined;
      return { accountId: sub, async claims() { return { ...user } as never; } };
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  const callback = provider.callback();
  server.on('request', async (req, res) => {
    const m = /^\/interaction\/([^/?]+)/.exec(req.url ?? '');
    if (!m) return callback(req, res);
    try {
      const details = await provider.interactionDetails(req, res);
      let result: Parameters<Provider['interactionResult']>[2];
      if (next.deny || !next.sub) {
        result = { error: 'access_denied', error_description: 'The user cancelled the sign-in' };
      } else {
        const grant = new provider.Grant({ accountId: next.sub, clientId: String(details.params.client_id) });
        grant.addOIDCScope(String(details.params.scope));
        result = {
          login: { accountId: next.sub, amr: next.amr ?? ['pwd'] },
          consent: { grantId: await grant.save() },
        };
      }
      const to = await provider.interactionResult(req, res, result, { mergeWithLastSubmission: false });
      res.writeHead(303, { location: to }).end();
    } catch (err) {
      res.writeHead(500).end(String(err));
    }
  });
  return {
    issuer,
    provider,
    users,
    next,
    async close() {
      server.closeAllConnections?.();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * Follow redirects across origins (Gatehouse ↔ upstream) until the browser reaches `stopAt` (the
 * client's callback) or a page is returned.
 */
export async function followAcross(browser: Browser, url: string, stopAt: string, init?: Parameters<Browser['request']>[1], rewrite: (url: string) => string = (u) => u): Promise<{ url: string; res: Response; html?: string; hops: string[] }> {
  let res = await browser.request(url, init);
  let current = url;
  const hops = [url];
  for (let i = 0; i < 25; i++) {
    const loc = res.headers.get('location');
    if (!loc || res.status < 300 || res.status >= 400) break;
    current = rewrite(new URL(loc, current).href);
    hops.push(current);
    if (current.startsWith(stopAt)) return { url: current, res, hops };
    res = await browser.request(current);
  }
  return { url: current, res, html: await res.text(), hops };
}
