// The service layer: stores opened, migrations run, secrets and keys loaded, and the services over
// them (accounts, clients, resources, revocation, limits, ...), without the HTTP app. The server
// builds its app on these (src/app.ts); the CLI runs its commands on them alone, so a command loads
// neither oidc-provider nor Koa nor the pages (issue 16: a CLI command in well under a second).
import type { Config } from './config/index.ts';
import { createPgDb, createPgliteDb, type Db } from './store/db.ts';
import { createMemoryKv, createRedisKv, type Kv } from './store/kv.ts';
import { migrate } from './store/migrate.ts';
import { signalLocalWrites, startChangeFeed, type ChangeFeed } from './store/changes.ts';
import { cachedPolicyStore, createPolicyStore, type PolicyStore } from './exchange/policy.ts';
import { createLivekitOptions, type LivekitOptionsStore } from './exchange/livekit-options.ts';
import type { Logger } from './http/log.ts';
import { createAudit, type Audit } from './audit/index.ts';
import { createAccounts, type Accounts } from './accounts/users.ts';
import { createClients, type Clients } from './oidc/clients.ts';
import { createResources, type Resources } from './oidc/resources.ts';
import { createSigningKeys, type SigningKeys } from './oidc/keys.ts';
import { loadInstanceSecrets } from './oidc/secrets.ts';
import { HTTPS_WITHOUT_PROXY } from './http/middleware.ts';
import { createMetrics, type Metrics } from './http/metrics.ts';
import type { SecretBox } from './crypto/secretbox.ts';
import { createRevocationStore, type RevocationService } from './revocation/store.ts';
import { withUserRevocation } from './revocation/accounts.ts';
import { createSessionEnds, type SessionEnds } from './revocation/session-ends.ts';
import { createMailer, type Mailer } from './account/mail.ts';
import { createRateLimits, type RateLimits } from './http/rate-limit.ts';
import { createMfa, type Mfa } from './mfa/factors.ts';
import { withLockoutReset } from './mfa/lockout.ts';
import { createPasskeys, type Passkeys } from './passkeys/store.ts';
import { createConnections, type Connections } from './federation/connections.ts';
import { createRelyingParty, type RelyingParty } from './federation/rp.ts';
import { callbackPath } from './federation/paths.ts';

export interface Deps {
  config: Config;
  db: Db;
  kv: Kv;
  log: Logger;
  box: SecretBox;
  cookieKeys: string[];
  audit: Audit;
  accounts: Accounts;
  clients: Clients;
  resources: Resources;
  keys: SigningKeys;
  revocations: RevocationService;
  /** Named rate limits and lockouts (issue 7): `limits.consume('exchangeUser', sub)` throws 429. */
  limits: RateLimits;
  mfa: Mfa;
  /** Passkeys (WebAuthn credentials, issue 19). */
  passkeys: Passkeys;
  /** Enterprise SSO (issue 4): upstream OIDC connections, and the RP that talks to them. */
  connections: Connections;
  upstream: RelyingParty;
  /** Prometheus metrics (GET /metrics); the audit writer above counts through it. */
  metrics: Metrics;
  /** Outgoing mail (SMTP_URL): password reset and email verification; undefined without it. */
  mailer?: Mailer;
  /** Sessions Gatehouse ends itself, for back-channel logout (src/revocation/session-ends.ts). */
  sessionEnds: SessionEnds;
  /** Token-exchange and room policies, cached (src/store/changes.ts). */
  policy: PolicyStore;
  /** LiveKit options per client and role, cached likewise. */
  livekitOptions: LivekitOptionsStore;
  /** What keeps this process's caches current (issue 16). */
  changes: ChangeFeed;
}

/** Open stores, run migrations, load secrets and keys. The caller owns `close()`. */
export async function assemble(config: Config, log: Logger, opts: { memoryDb?: boolean } = {}): Promise<Deps & { close(): Promise<void>; warnings: string[] }> {
  const rawDb = config.DATABASE_URL
    ? createPgDb(config.DATABASE_URL, { timeoutMs: config.DATABASE_TIMEOUT_MS })
    : await createPgliteDb(opts.memoryDb ? undefined : config.DATA_DIR);
  let changes: ChangeFeed | undefined;
  try {
    await migrate(rawDb);
    // Issue 16: lookups on the token paths are cached in process; every node hears every change.
    changes = await startChangeFeed(rawDb, log);
    const dbStats = { statements: 0 };
    const db = signalLocalWrites(rawDb, changes, dbStats);
    const kv = config.REDIS_URL ? createRedisKv(config.REDIS_URL, config.REDIS_KEY_PREFIX, { timeoutMs: config.REDIS_TIMEOUT_MS }) : createMemoryKv(config.REDIS_KEY_PREFIX);
    const { box, cookieKeys, warnings } = await loadInstanceSecrets(config, db);
    const metrics = createMetrics({
      token: config.METRICS_TOKEN,
      // Read at scrape time, when the store below exists.
      revocationReady: () => revocations.ready(),
      changes,
      dbStatements: () => dbStats.statements,
      info: { mode: config.embedded ? 'embedded' : 'postgres', store: kv.kind },
    });
    // Every audit event, whoever records it, is also counted (gatehouse_audit_events_total).
    const audit = metrics.countAudit(createAudit(db, log));
    const keys = createSigningKeys(db, box);
    await keys.ensure();
    // Revocation (issue 6): durable in the database, hot in the Kv; loaded before the app answers.
    const revocations = createRevocationStore(kv, { db, log });
    await revocations.start().catch(async (err) => {
      // e.g. a Redis that evicts keys (UnsafeRedisError): nothing else has started yet.
      await revocations.close();
      await kv.close();
      await changes!.close();
      throw err;
    });
    // Issue 7: limits before accounts, so a password reset can end a lockout.
    const limits = createRateLimits(kv, config, { audit, log });
    const sessionEnds = createSessionEnds();
    if (config.ISSUER.startsWith('https://') && !config.TRUST_PROXY) warnings.push(HTTPS_WITHOUT_PROXY);
    if (!config.REDIS_URL) warnings.push('REDIS_URL is not set: revocation lists, rate limits and pub/sub are in-process; run a single Gatehouse process only.');
    return {
      config, db, kv, log, box, cookieKeys, audit, keys, warnings, metrics, mailer: createMailer(config, log), changes,
      // Password change, disable, delete and MFA reset revoke everything issued to the user (issue 6).
      accounts: withLockoutReset(withUserRevocation(createAccounts(db, audit, changes), { revocations, config, db, log, sessionEnds }), limits),
      sessionEnds,
      clients: createClients(db, box, changes),
      resources: createResources(db, box, changes),
      policy: cachedPolicyStore(createPolicyStore(db), changes),
      livekitOptions: createLivekitOptions(db, changes),
      revocations,
      limits,
      mfa: createMfa(db, box, { issuer: config.MFA_ISSUER_NAME }),
      passkeys: createPasskeys(db),
      ...federationDeps(db, box, config),
      async close() {
        await revocations.close();
        await kv.close();
        await changes!.close();
        await db.close();
      },
    };
  } catch (err) {
    await changes?.close().catch(() => {});
    await rawDb.close().catch(() => {});
    throw err;
  }
}

function federationDeps(db: Db, box: SecretBox, config: Config) {
  const connections = createConnections(db, box);
  return { connections, upstream: createRelyingParty(connections, { redirectUri: `${config.ISSUER}${callbackPath}` }) };
}
