// OIDC Back-Channel Logout 1.0. oidc-provider sends the logout tokens of the sessions it ends itself
// (RP-initiated logout); `sendBackchannelLogouts` sends them for the sessions Gatehouse ends (user and
// session revocation, src/revocation/session-ends.ts) with the same Client#backchannelLogout. Both
// are audited (`backchannel.logout`); a token never is.
import type Provider from 'oidc-provider';
import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';
import type { Audit } from '../audit/index.ts';
import type { Logger } from '../http/log.ts';
import type { EndedSession } from '../revocation/session-ends.ts';

type LogoutClient = { clientId: string; backchannelLogoutUri?: string; backchannelLogout(sub: string, sid?: string): Promise<void> };

async function record(audit: Audit, outcome: 'success' | 'failure', clientId: string, accountId: string, details: Record<string, unknown>) {
  await audit.record({ type: 'backchannel.logout', outcome, subject: accountId, clientId, details });
}

export async function sendBackchannelLogouts(provider: Provider, sessions: EndedSession[], reason: string, audit: Audit, log: Logger) {
  for (const session of sessions) {
    for (const [clientId, { sid }] of Object.entries(session.authorizations)) {
      const client = await provider.Client.find(clientId).catch(() => undefined) as unknown as LogoutClient | undefined;
      if (!client?.backchannelLogoutUri) continue;
      try {
        await client.backchannelLogout(session.accountId, sid);
        await record(audit, 'success', clientId, session.accountId, { reason });
      } catch (err) {
        log.warn({ err: { message: (err as Error).message }, clientId }, 'back-channel logout failed');
        await record(audit, 'failure', clientId, session.accountId, { reason, error: (err as Error).message });
      }
    }
  }
}

/** Audit the logout tokens oidc-provider sends on RP-initiated logout. */
export function auditProviderBackchannel(provider: Provider, audit: Audit) {
  // oidc-provider emits these from its end_session action; its typings do not list them.
  const events = provider as unknown as { on(event: string, listener: (...args: never[]) => void): void };
  events.on('backchannel.success', (_ctx: KoaContextWithOIDC, client: LogoutClient, accountId: string) => {
    void record(audit, 'success', client.clientId, accountId, { reason: 'logout' });
  });
  events.on('backchannel.error', (_ctx: KoaContextWithOIDC, err: Error, client: LogoutClient, accountId: string) => {
    void record(audit, 'failure', client.clientId, accountId, { reason: 'logout', error: err.message });
  });
}

/**
 * oidc-provider refuses outbound requests to private and loopback addresses (its SSRF guard). A
 * back-channel logout URI is set only by an operator (`client create --backchannel-logout-uri`;
 * dynamic registration and metadata documents may not set one), and internal apps on a private
 * network are what it is for, so logout tokens may go there. Every other request keeps the guard.
 */
export function allowPrivateBackchannel(configuration: Configuration) {
  const inner = configuration.fetch ?? ((url: URL | string, options: RequestInit) => globalThis.fetch(url, options));
  configuration.fetch = (async (url: URL | string, options: RequestInit & { dispatcher?: unknown }) => {
    const isLogoutToken = options.method === 'POST' && options.body instanceof URLSearchParams && options.body.has('logout_token');
    if (!isLogoutToken) return inner(url, options);
    // Straight to Node's fetch (oidc-provider already set its 2.5 s timeout): neither its guard nor
    // the client-ID-metadata-document guard (src/oidc/cimd.ts) applies to an operator's URI.
    const { dispatcher: _guard, ...rest } = options;
    return globalThis.fetch(url, rest);
  }) as never;
}
