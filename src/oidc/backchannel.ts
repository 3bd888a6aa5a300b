// OIDC Back-Channel Logout 1.0. oidc-provider sends the logout tokens of the sessions it ends itself
// (RP-initiated logout); `sendBackchannelLogouts` sends them for the sessions Gatehouse ends (user and
// session revocation, src/revocation/session-ends.ts) with the same Client#backchannelLogout. Both
// are audited (`backchannel.logout`); a token never is.
import type Provider from 'oidc-provider';
import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';
import fs from 'node:fs';
import tls from 'node:tls';
import type { Config } from '../config/index.ts';
import type { Audit } from '../audit/index.ts';
import { undiciAgent } from './cimd.ts';
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
 * back-channel logout URI and a CIBA notification endpoint are set only by an operator (`client
 * create --backchannel-logout-uri` / `--ciba-notification-endpoint`; dynamic registration and
 * metadata documents may set neither), and internal apps on a private network are what they are
 * for, so logout tokens and CIBA pings may go there. Every other request keeps the guard.
 */
export function allowPrivateBackchannel(configuration: Configuration, config: Pick<Config, 'BACKCHANNEL_CA_FILE'> = {}) {
  const inner = configuration.fetch ?? ((url: URL | string, options: RequestInit) => globalThis.fetch(url, options));
  // BACKCHANNEL_CA_FILE: the operator's internal CA, trusted beside the public ones for these calls only.
  const Agent = config.BACKCHANNEL_CA_FILE ? undiciAgent() : undefined;
  const dispatcher = Agent && new Agent({ connect: { ca: [...tls.rootCertificates, fs.readFileSync(config.BACKCHANNEL_CA_FILE!, 'utf8')] } });
  configuration.fetch = (async (url: URL | string, options: RequestInit & { dispatcher?: unknown }) => {
    if (!isLogoutToken(options) && !isCibaPing(options)) return inner(url, options);
    // Straight to Node's fetch (oidc-provider already set its 2.5 s timeout): neither its guard nor
    // the client-ID-metadata-document guard (src/oidc/cimd.ts) applies to an operator's URI.
    const { dispatcher: _guard, ...rest } = options;
    return globalThis.fetch(url, dispatcher ? { ...rest, dispatcher } as RequestInit : rest);
  }) as never;
}

const isLogoutToken = (o: RequestInit) => o.method === 'POST' && o.body instanceof URLSearchParams && o.body.has('logout_token');

/** CIBA Core §10.2: a JSON POST of {auth_req_id} with the client's notification token as a bearer token. */
function isCibaPing(o: RequestInit) {
  if (o.method !== 'POST' || typeof o.body !== 'string') return false;
  const auth = new Headers(o.headers).get('authorization');
  try {
    return Boolean(auth?.startsWith('Bearer ')) && Object.keys(JSON.parse(o.body)).join() === 'auth_req_id';
  } catch {
    return false;
  }
}
