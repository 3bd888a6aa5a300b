// Builds the Koa app: no listen, so tests mount it on any server. Dependencies are passed in
// (STYLE.md §4); main.ts and the tests assemble them with `assemble()`.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import Koa from 'koa';
import compose from 'koa-compose';
import cors from '@koa/cors';
import type Provider from 'oidc-provider';
import { withAuditWrites } from './audit/index.ts';
import { buildProvider } from './oidc/provider.ts';
import { startSweeper } from './oidc/adapter.ts';
import { createInteractionRouter, renderView } from './interaction/router.ts';
import { errorHandler, PayloadTooLarge, RETRY_AFTER_SECONDS } from './http/errors.ts';
import { accessLog, closeAfterRefusedBody, healthRoutes, requestId, requireHttpsForPages, retryAfterWhenUnavailable, securityHeaders } from './http/middleware.ts';
import { rejectHostileInput } from './http/input.ts';
// --- revocation (issue 6) ---
import { attachRevocationWriters, awaitRevocationWrites, revocationChecks } from './revocation/oidc.ts';
import { structuredTokenEndpoints } from './revocation/endpoints.ts';
import { auditProviderBackchannel, sendBackchannelLogouts } from './oidc/backchannel.ts';
import { createAccountRouter, sessionAccountId } from './account/router.ts';
import { createFrontDoor } from './account/front-door.ts';
import { createAccountTokens, createRecoveryRouter, sendVerificationMail } from './account/recovery.ts';
import { createAdminApi } from './admin/api.ts';
import { createAdminConsole } from './admin/console.ts';
import { USER_IMPORT_PATH } from './admin/import-command.ts';
import { createParticipantRemover, createRoomSessions, createRoomSessionsRouter, startParticipantRemoval } from './livekit/rooms.ts';
import { createRejoinGuard } from './livekit/rejoin.ts';
import { createWebhookRouter } from './livekit/webhook.ts';
// --- end revocation ---
// --- MCP clients and voice devices (issue 5) ---
import { attachRegistrationAudit, registrationFeatures, registrationPolicy } from './oidc/registration.ts';
import { configureCimd } from './oidc/cimd.ts';
import { configureDeviceFlow, createDeviceAccountRouter, createDevices, devicePolling } from './oidc/device.ts';
import { cibaDiscovery, configureCiba, createApprovalsRouter, type CibaDeps } from './ciba/index.ts';
import { defaultScope } from './oidc/mcp.ts';
// --- end MCP clients and voice devices ---
import { lazyKeyRing, registerTokenExchange } from './exchange/index.ts';
import { createLivekitRouter } from './livekit/routes.ts';
// --- login security (issue 7) ---
import { attachRateLimitHeaders, connectionRateLimits, exchangeRateLimit } from './http/rate-limit.ts';
// --- end login security ---
// --- federation (issue 4) ---
import { idJagDiscovery, registerIdJagGrant } from './federation/id-jag.ts';
import { createFederation, type Federation } from './federation/router.ts';
// --- end federation ---

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// The service layer (stores, secrets, keys, accounts, ...) is src/deps.ts; the app is built on it.
export { assemble, type Deps } from './deps.ts';
import type { Deps } from './deps.ts';


/** oidc-provider and the routes bound to it; rebuilt when the signing keys change. */
interface OidcLayer {
  provider: Provider;
  middleware: Koa.Middleware;
}

async function buildOidcLayer(deps: Deps): Promise<OidcLayer> {
  let federation: Federation | undefined;
  const provider = buildProvider({
    ...deps, jwks: await deps.keys.privateJwks(),
    extend: (configuration) => {
      revocationChecks(deps.revocations, deps)(configuration);
      // Issue 5: dynamic registration, client ID metadata documents, the device flow's pages.
      Object.assign((configuration.features ??= {}), registrationFeatures(deps.config));
      configureCimd(deps)(configuration);
      configureDeviceFlow({ ...deps, devices: createDevices(deps.db) })(configuration);
      // Issue 19: in-call approvals (CIBA).
      configureCiba(cibaDeps(deps))(configuration);
      // Issue 19: ID-JAG metadata (both roles).
      idJagDiscovery(configuration);
    },
    upstreamLogoutOffer: async (ctx) => federation?.upstreamLogoutOffer(ctx),
  });
  federation = createFederation({ ...deps, provider, rp: deps.upstream });
  attachRevocationWriters(provider, deps);
  auditProviderBackchannel(provider, deps.audit);
  attachRegistrationAudit(provider, deps.audit);
  registerTokenExchange(provider, deps, { rateLimit: exchangeRateLimit(deps.limits) });
  // Issue 19: redeem ID-JAGs of trusted enterprise IdPs (RFC 7523 jwt-bearer).
  registerIdJagGrant(provider, { ...deps, keyRing: lazyKeyRing(deps), rateLimit: exchangeRateLimit(deps.limits) });
  attachRateLimitHeaders(provider);
  const interaction = createInteractionRouter({
    provider, config: deps.config, accounts: deps.accounts, audit: deps.audit, log: deps.log,
    kv: deps.kv, box: deps.box, mfa: deps.mfa, limits: deps.limits, resources: deps.resources, passkeys: deps.passkeys, connections: deps.connections,
    federation,
    mail: deps.mailer && {
      onRegistered: (user) => sendVerificationMail({ config: deps.config, mailer: deps.mailer!, tokens: createAccountTokens(deps.db) }, user),
    },
  });
  // oidc-provider is a Koa app; composing its middleware runs it on our context (what koa-mount does).
  return { provider, middleware: compose([federation.upstreamLogout, federation.router.routes(), interaction.routes(), interaction.allowedMethods(), ...provider.middleware]) as Koa.Middleware };
}

const STYLESHEET = fs.readFileSync(path.join(ROOT, 'public/style.css'));
const APPROVALS_SCRIPT = fs.readFileSync(path.join(ROOT, 'public/approvals.js'));
// Issue 19: the WebAuthn browser library is served from our own origin (no CDN: the pages' CSP
// allows only 'self', and a sign-in page must not run code another host can change).
const WEBAUTHN_BROWSER = fs.readFileSync(path.join(
  path.dirname(path.dirname(createRequire(import.meta.url).resolve('@simplewebauthn/browser'))), 'dist/bundle/index.umd.min.js'));
const PASSKEYS_SCRIPT = fs.readFileSync(path.join(ROOT, 'public/passkeys.js'));
const SCRIPTS: Record<string, Buffer> = {
  '/assets/approvals.js': APPROVALS_SCRIPT,
  '/assets/passkeys.js': PASSKEYS_SCRIPT,
  '/assets/simplewebauthn-browser.js': WEBAUTHN_BROWSER,
};

function parseLimit(s: string): number {
  const m = /^(\d+)(b|kb|mb)$/i.exec(s)!;
  return Number(m[1]) * ({ b: 1, kb: 1024, mb: 1024 * 1024 } as Record<string, number>)[m[2].toLowerCase()];
}

/** What oidc-provider leaves on the context after POST /token/revocation (ids only). */
interface OidcRevocationState {
  client?: { clientId: string };
  entities?: Partial<Record<'RefreshToken' | 'AccessToken' | 'ClientCredentials', { kind: string; accountId?: string; grantId?: string }>>;
}

export interface GatehouseApp {
  app: Koa;
  /** The current provider (replaced when signing keys change). */
  provider(): Provider;
  /** Re-read signing keys now; returns true when they changed. */
  refreshKeys(): Promise<boolean>;
  /**
   * Shutting down: /ready answers 503 (a load balancer stops sending new requests) and responses
   * close their connection, so keep-alive clients reconnect elsewhere while in-flight requests finish.
   */
  drain(): void;
  close(): Promise<void>;
}

export async function createApp(deps: Deps): Promise<GatehouseApp> {
  const { config, log, metrics } = deps;
  let layer = await buildOidcLayer(deps);
  let keysVersion = await deps.keys.version();

  async function refreshKeys() {
    const v = await deps.keys.version();
    if (v === keysVersion) return false;
    layer = await buildOidcLayer(deps);
    keysVersion = v;
    log.info('signing keys changed; provider reloaded');
    return true;
  }
  const keyTimer = setInterval(() => {
    refreshKeys().catch((err) => log.warn({ err }, 'signing key refresh failed'));
  }, config.KEYS_REFRESH_SECONDS * 1000);
  keyTimer.unref();
  const stopSweeper = startSweeper(deps.db, 5 * 60_000, log);

  // Back-channel logout for the sessions Gatehouse ends itself; never holds up the revocation.
  deps.sessionEnds.attach((sessions, reason) => {
    void sendBackchannelLogouts(layer.provider, sessions, reason, deps.audit, log).catch((err) => log.warn({ err }, 'back-channel logout failed'));
  });

  const app = new Koa();
  app.proxy = config.TRUST_PROXY;
  app.keys = deps.cookieKeys;
  const bodyLimit = parseLimit(config.BODY_LIMIT);

  let draining = false;
  app.use(async function closeConnectionsWhileDraining(ctx, next) {
    if (draining) ctx.set('Connection', 'close');
    await next();
  });
  app.use(requestId());
  app.use(metrics.measure());
  app.use(accessLog(log));
  app.use(retryAfterWhenUnavailable(RETRY_AFTER_SECONDS));
  app.use(securityHeaders(['/interaction', '/account', '/admin', '/password', '/assets', '/'], { https: config.ISSUER.startsWith('https://') }));
  app.use(closeAfterRefusedBody());
  app.use((_ctx, next) => withAuditWrites(next));
  app.use(errorHandler(log, (status, error, description) => renderView('error', { title: status === 503 ? 'Try again shortly' : 'Error', error, description, status })));
  app.use(healthRoutes([
    { name: 'database', check: () => deps.db.ping() },
    { name: deps.kv.kind === 'redis' ? 'redis' : 'store', check: () => deps.kv.ping() },
    { name: 'revocation', check: () => deps.revocations.ready() },
    { name: 'accepting', check: async () => { if (draining) throw new Error('shutting down'); } },
  ]));
  app.use(metrics.serve());
  app.use(async function rejectLargeBodies(ctx, next) {
    const length = Number(ctx.get('content-length') || 0);
    // The admin API's user import reads its body as a stream, a line at a time, after the caller is
    // authenticated: an import file may be any size (src/admin/import-command.ts).
    const streamed = ctx.method === 'POST' && ctx.path === USER_IMPORT_PATH;
    if (length > bodyLimit && !streamed) throw new PayloadTooLarge(`request body exceeds ${config.BODY_LIMIT}`);
    await next();
  });
  app.use(rejectHostileInput({ audit: deps.audit, bodyLimit }));
  app.use(requireHttpsForPages(config));
  app.use(async function serveAssets(ctx, next) {
    if (ctx.path === '/favicon.ico') {
      ctx.status = 204;
      ctx.set('Cache-Control', 'public, max-age=86400');
      return;
    }
    const script = SCRIPTS[ctx.path];
    if (script) {
      ctx.type = 'application/javascript';
      ctx.set('Cache-Control', 'public, max-age=3600');
      ctx.body = script;
      return;
    }
    if (ctx.path !== '/assets/style.css') return next();
    ctx.type = 'text/css';
    ctx.set('Cache-Control', 'public, max-age=3600');
    ctx.body = STYLESHEET;
  });
  app.use(async function oauthServerMetadata(ctx, next) {
    // RFC 8414 metadata is the same document as OIDC discovery.
    if (ctx.path === '/.well-known/oauth-authorization-server') ctx.path = '/.well-known/openid-configuration';
    await next();
  });
  app.use(cors({
    origin: (ctx) => (config.CORS_ORIGINS.includes(ctx.get('origin')) ? ctx.get('origin') : ''),
    allowMethods: ['GET', 'POST'],
    credentials: false,
  }) as Koa.Middleware);
  app.use(async function auditRevocation(ctx, next) {
    await next();
    if (ctx.path !== '/token/revocation' || ctx.method !== 'POST' || ctx.status !== 200) return;
    // oidc-provider keeps the opaque token it revoked as an entity. A JWT access token leaves none
    // (src/revocation/endpoints.ts audits it, with its subject), nor does an unknown token, which
    // RFC 7009 §2.2 answers 200 with nothing revoked.
    const oidc = (ctx as unknown as { oidc?: OidcRevocationState }).oidc;
    const token = oidc?.entities?.RefreshToken ?? oidc?.entities?.AccessToken ?? oidc?.entities?.ClientCredentials;
    if (!token) return;
    void deps.audit.record({
      type: 'token.revoke', subject: token.accountId ?? null, clientId: oidc?.client?.clientId ?? null, ip: ctx.ip, requestId: ctx.state.requestId,
      details: { kind: token.kind, grant_id: token.grantId ?? null },
    });
  });
  app.use(async function limitOAuthRequestsPerIp(ctx, next) {
    // Issue 7: /token (every grant) and dynamic registration per client IP; 429 slow_down + Retry-After.
    if (ctx.method === 'POST' && ctx.path === '/token') await deps.limits.consume('tokenIp', ctx.ip, { ip: ctx.ip, requestId: ctx.state.requestId });
    if (ctx.method === 'POST' && ctx.path === '/reg') await deps.limits.consume('registerIp', ctx.ip, { ip: ctx.ip, requestId: ctx.state.requestId });
    await next();
  });
  const livekit = createLivekitRouter({ ...deps, provider: () => layer.provider }, connectionRateLimits(deps.limits));
  app.use(livekit.routes());
  // --- revocation (issue 6): webhooks, room sessions, JWT revocation/introspection, write barrier ---
  const rooms = createRoomSessions(deps.db);
  const remover = createParticipantRemover({ ...deps, rooms });
  // Issue 19.4: every join and published track is checked against revocation and Gatehouse-only rooms.
  const rejoin = remover && createRejoinGuard({ ...deps, remover });
  app.use(createWebhookRouter({ config, rooms, audit: deps.audit, log, rejoin }).routes());
  app.use(createRoomSessionsRouter({ ...deps, rooms, provider: () => layer.provider }).routes());
  const stopParticipantRemoval = startParticipantRemoval({ ...deps, rooms }, remover);
  app.use(awaitRevocationWrites());
  app.use(structuredTokenEndpoints(deps));
  // --- end revocation ---
  // --- MCP clients and voice devices (issue 5) ---
  app.use(registrationPolicy(deps));
  app.use(defaultScope(deps));
  app.use(devicePolling(deps));
  app.use(createDeviceAccountRouter({ ...deps, devices: createDevices(deps.db), provider: () => layer.provider }).routes());
  // --- end MCP clients and voice devices ---
  if (deps.mailer) {
    // Password reset and email verification by mail (src/account/recovery.ts).
    app.use(createRecoveryRouter({
      ...deps, mailer: deps.mailer,
      async signedInUser(ctx) {
        const id = await sessionAccountId(layer.provider, ctx);
        const user = id ? await deps.accounts.findUserById(id) : undefined;
        return user?.active ? user : undefined;
      },
    }).routes());
  }
  app.use(createApprovalsRouter({
    ...cibaDeps(deps), provider: () => layer.provider, clients: deps.clients, secureCookies: config.ISSUER.startsWith('https://'),
    async sessionUser(ctx) {
      const session = await layer.provider.Session.get(ctx as never);
      if (!session?.accountId) return undefined;
      const s = session as unknown as { accountId: string; acr?: string; amr?: string[]; loginTs?: number };
      return { id: s.accountId, acr: s.acr, amr: s.amr, authTime: s.loginTs };
    },
  }).routes());
  app.use(createAccountRouter({ ...deps, rooms, provider: () => layer.provider }).routes());
  app.use(createFrontDoor({ ...deps, provider: () => layer.provider }).routes());
  // The admin REST API: the CLI's commands behind bearer tokens for <ISSUER>/admin/api.
  app.use(createAdminApi({ ...deps, provider: () => layer.provider, afterKeysChange: refreshKeys }));
  app.use(createAdminConsole({ ...deps, provider: () => layer.provider }).routes());
  app.use(cibaDiscovery());
  app.use((ctx, next) => layer.middleware(ctx, next));

  return {
    app,
    provider: () => layer.provider,
    refreshKeys,
    drain() {
      draining = true;
    },
    async close() {
      clearInterval(keyTimer);
      stopSweeper();
      stopParticipantRemoval();
    },
  };
}

/** What the CIBA hooks and the approvals pages need from the app (src/ciba/index.ts). */
function cibaDeps(deps: Deps): CibaDeps {
  return {
    config: deps.config, db: deps.db, kv: deps.kv, audit: deps.audit, log: deps.log, accounts: deps.accounts,
    revocations: deps.revocations, keys: deps.keys, resources: deps.resources, mailer: deps.mailer,
    permissionsOf: async (userId) => (await deps.accounts.rolesAndPermissions(userId)).permissions,
  };
}
