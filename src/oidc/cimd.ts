// Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, oidc-provider's
// `clientIdMetadataDocument` feature): a client whose client_id is an https URL is described by the
// JSON document at that URL, fetched on first use and cached. Off unless CIMD_ALLOWED_HOSTS lists
// hosts. Outbound fetches are the SSRF surface (these and a client's jwks_uri, guardOutboundFetches), so:
//   - only listed hosts are fetched (allowFetch), over https, without redirects (oidc-provider);
//   - every address a host resolves to is checked at connect time (our DNS lookup), and IP literals
//     before the request: no private, loopback, link-local, CGNAT, multicast or reserved addresses,
//     unless CIMD_ALLOW_PRIVATE_ADDRESSES (tests, closed networks);
//   - CIMD_MAX_BYTES and CIMD_TIMEOUT_MS bound the document and the fetch; oidc-provider caches it
//     (Cache-Control max-age, clamped to 1 min … 1 h here).
// A document describes a public client with no more trust than a dynamically registered one
// (allowClient): code + refresh grants only, never first-party, redirect URIs as RFC 8252 allows.
import dns from 'node:dns';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Configuration } from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Logger } from '../http/log.ts';
import { redirectUri } from './clients.ts';

const BLOCKED = new net.BlockList();
for (const [addr, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) BLOCKED.addSubnet(addr, prefix, 'ipv4');
for (const [addr, prefix] of [
  ['::', 128], ['::1', 128], ['64:ff9b::', 96], ['100::', 64], ['2001:db8::', 32], ['2002::', 16], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8],
] as const) BLOCKED.addSubnet(addr, prefix, 'ipv6');

/** Private, loopback, link-local and other special-use addresses (IPv4-mapped IPv6 included). */
export function isSpecialUseAddress(address: string): boolean {
  const family = net.isIP(address);
  if (family === 4) return BLOCKED.check(address, 'ipv4');
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return BLOCKED.check(mapped[1], 'ipv4');
    return BLOCKED.check(address, 'ipv6');
  }
  return true; // not an address at all: refuse
}

export class CimdFetchRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CimdFetchRefused';
  }
}

/** A DNS lookup that fails for special-use addresses, so the check holds for the connected address. */
function guardedLookup(hostname: string, options: dns.LookupOptions, callback: (...args: unknown[]) => void) {
  dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err);
    const list = addresses as dns.LookupAddress[];
    const bad = list.find((a) => isSpecialUseAddress(a.address));
    if (bad) return callback(new CimdFetchRefused(`${hostname} resolves to a private or special-use address`));
    if (options.all) return callback(null, list);
    return callback(null, list[0].address, list[0].family);
  });
}

/** undici's Agent, the class behind Node's fetch (the same route oidc-provider takes to it). */
export function undiciAgent(): (new (opts: object) => object) | undefined {
  void Response; // loads Node's bundled undici, which sets the global dispatcher
  const g = globalThis as Record<symbol, { constructor: new (opts: object) => object } | undefined>;
  return (g[Symbol.for('undici.globalDispatcher.2')] ?? g[Symbol.for('undici.globalDispatcher.1')])?.constructor;
}

export function hostAllowed(config: Pick<Config, 'CIMD_ALLOWED_HOSTS'>, clientId: string): boolean {
  const url = URL.parse(clientId);
  if (!url || url.protocol !== 'https:') return false;
  const allowed = config.CIMD_ALLOWED_HOSTS.map((h) => h.toLowerCase());
  return allowed.includes('*') || allowed.includes(url.host.toLowerCase()) || allowed.includes(url.hostname.toLowerCase());
}

/** Grant types a metadata document may name (no client credentials, no token exchange). */
const DOCUMENT_GRANTS = new Set(['authorization_code', 'refresh_token']);

type ClientLike = { clientId: string; grantTypes?: string[]; responseTypes?: string[]; redirectUris?: string[]; metadata(): Record<string, unknown> };

/** The registration policy, for documents: the reason a client is refused, or undefined. */
export function documentPolicyViolation(client: ClientLike): string | undefined {
  const m = client.metadata();
  if (m.first_party === true || m.require_mfa !== undefined || m.admin_api !== undefined) return 'first_party, require_mfa and admin_api cannot be set by a metadata document';
  // Gatehouse would POST to it: a document must not point server-side requests anywhere it likes.
  if (m.backchannel_logout_uri !== undefined) return 'backchannel_logout_uri cannot be set by a metadata document';
  const grants = client.grantTypes ?? (m.grant_types as string[] | undefined) ?? [];
  const extra = grants.find((g) => !DOCUMENT_GRANTS.has(g));
  if (extra) return `grant type ${extra} is not available to metadata-document clients`;
  const uris = client.redirectUris ?? (m.redirect_uris as string[] | undefined) ?? [];
  const badUri = uris.find((u) => !redirectUri.safeParse(u).success);
  if (badUri) return `redirect URI ${badUri.slice(0, 200)} is not allowed`;
  return undefined;
}

/** oidc-provider's default is no limit for jwks_uri responses; ten RSA-4096 keys fit well inside. */
const JWKS_URI_MAX_BYTES = 64 * 1024;

/**
 * The guard on every request oidc-provider makes for a client: metadata documents and jwks_uri key
 * sets (private_key_jwt, docs/clients.md), whoever registered the URL. Always installed; the CIMD_*
 * address, CA and timeout settings are its settings.
 */
export function guardOutboundFetches(deps: { config: Config; log: Logger }) {
  const { config, log } = deps;
  return function installOutboundGuard(configuration: Configuration) {
    configuration.fetchResponseBodyLimits = {
      ...(configuration.fetchResponseBodyLimits ?? {}),
      'client_id metadata document': config.CIMD_MAX_BYTES,
      jwks_uri: JWKS_URI_MAX_BYTES,
    } as never;

    const Agent = undiciAgent();
    const ca = config.CIMD_CA_FILE ? fs.readFileSync(config.CIMD_CA_FILE, 'utf8') : undefined;
    const dispatcher = Agent
      ? new Agent({
        connect: {
          // Extra CAs are added to the public roots, not instead of them.
          ...(ca ? { ca: [...tls.rootCertificates, ca] } : {}),
          ...(config.CIMD_ALLOW_PRIVATE_ADDRESSES ? {} : { lookup: guardedLookup }),
          timeout: config.CIMD_TIMEOUT_MS,
        },
        headersTimeout: config.CIMD_TIMEOUT_MS,
        bodyTimeout: config.CIMD_TIMEOUT_MS,
      })
      : undefined;
    if (!dispatcher) log.warn('could not build the guarded fetch dispatcher; oidc-provider\'s own SSRF protection applies');
    const original = configuration.fetch ?? ((url: URL | string, options: RequestInit) => globalThis.fetch(url, options));

    configuration.fetch = async function guardedFetch(url: URL | string, options: RequestInit & { dispatcher?: unknown }) {
      const target = new URL(String(url));
      const host = target.hostname.replace(/^\[|\]$/g, '');
      if (!config.CIMD_ALLOW_PRIVATE_ADDRESSES && net.isIP(host) && isSpecialUseAddress(host)) {
        throw new CimdFetchRefused(`${target.host} is a private or special-use address`);
      }
      const signal = AbortSignal.any([options.signal, AbortSignal.timeout(config.CIMD_TIMEOUT_MS)].filter(Boolean) as AbortSignal[]);
      // No redirects followed for any of them (documents already ask for 'manual'): a redirect to an
      // IP literal would skip the DNS-time check.
      const redirect = options.redirect === 'manual' ? 'manual' : 'error';
      return original(url, { ...options, redirect, signal, ...(dispatcher ? { dispatcher } : {}) } as never);
    } as never;
  };
}

export function configureCimd(deps: { config: Config; log: Logger }) {
  const { config, log } = deps;
  const installOutboundGuard = guardOutboundFetches(deps);
  return function configureClientIdMetadataDocuments(configuration: Configuration) {
    installOutboundGuard(configuration);
    if (!config.CIMD_ALLOWED_HOSTS.length) return;
    const features = (configuration.features ??= {});
    features.clientIdMetadataDocument = {
      enabled: true,
      // The draft version oidc-provider 9 implements; an upgrade that changes it must be reviewed here.
      ack: 'draft-02',
      async allowFetch(_ctx, clientId) {
        const ok = hostAllowed(config, clientId);
        if (!ok) log.info({ clientId: clientId.slice(0, 300) }, 'client id metadata document host not allowed');
        return ok;
      },
      async allowClient(_ctx, client) {
        const violation = documentPolicyViolation(client as unknown as ClientLike);
        if (violation) log.info({ clientId: client.clientId, violation }, 'client id metadata document refused');
        return !violation;
      },
      cacheDuration: { min: 60, max: 3600 },
    };
  };
}
