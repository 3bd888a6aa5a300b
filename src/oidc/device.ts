// The device authorization grant (RFC 8628) for voice hardware: oidc-provider runs /device/auth,
// /device and /token; Gatehouse supplies
//   - the pages: a user-code page that works on a phone, a confirmation page where the person names
//     the device, and a success page (views/device-*.pug). Login, MFA and consent in between are the
//     ordinary interaction pages;
//   - polling discipline: `interval` in the /device/auth response and `slow_down` (§3.5) for a
//     device that polls faster than it was told, the interval growing by 5 s each time;
//   - a per-user list of devices (table `devices`), each with its own grant, so the user can see
//     them at /account/devices and revoke one without touching the others.
import crypto from 'node:crypto';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Queryable } from '../store/db.ts';
import type { Kv } from '../store/kv.ts';
import type { Audit } from '../audit/index.ts';
import type { Logger } from '../http/log.ts';
import type { RevocationService } from '../revocation/store.ts';
import { revokeAsOperator } from '../revocation/admin.ts';
import { HttpError, InvalidRequest, InvalidToken, NotFound } from '../http/errors.ts';
import { handBodyToProvider, readRawBody } from '../http/body.ts';
import { assertCsrf, CSRF_FIELD, issueCsrf } from '../interaction/csrf.ts';
import { sessionAccountId } from '../account/router.ts';
import { renderView as render } from '../interaction/router.ts';


export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
/** oidc-provider's default user-code alphabet (no vowels, so no words) and shape. */
const CHARSET = 'BCDFGHJKLMNPQRSTVWXZ';
const MASK = '****-****';
const NAME_MAX = 64;
/** RFC 8628 §3.5: each slow_down adds 5 seconds to the interval. */
const SLOW_DOWN_STEP = 5;
/** Network jitter allowance when comparing two polls. */
const POLL_TOLERANCE_MS = 250;

export const normalizeUserCode = (code: string) => code.toUpperCase().replace(new RegExp(`[^${CHARSET}]`, 'g'), '');
const cleanName = (s: unknown) => (typeof s === 'string' ? s.replace(/\p{Cc}/gu, '').trim().slice(0, NAME_MAX) : '');
const hash = (s: string) => crypto.createHash('sha256').update(s).digest('base64url').slice(0, 32);

// --- storage -------------------------------------------------------------------------------------

export interface Device {
  id: string;
  userId: string;
  clientId: string;
  grantId: string;
  name: string;
  createdAt: Date;
  revokedAt: Date | null;
}

interface Row {
  id: string;
  user_id: string;
  client_id: string;
  grant_id: string;
  name: string;
  created_at: Date;
  revoked_at: Date | null;
}

const toDevice = (r: Row): Device => ({
  id: r.id, userId: r.user_id, clientId: r.client_id, grantId: r.grant_id, name: r.name, createdAt: r.created_at, revokedAt: r.revoked_at,
});

export function createDevices(db: Queryable) {
  return {
    async record(d: { userId: string; clientId: string; grantId: string; name: string; ip?: string; userAgent?: string }): Promise<Device> {
      const r = await db.query<Row>(
        `INSERT INTO devices (id, user_id, client_id, grant_id, name, ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
        [`dev_${crypto.randomBytes(12).toString('base64url')}`, d.userId, d.clientId, d.grantId, d.name, d.ip ?? null, d.userAgent?.slice(0, 300) ?? null],
      );
      return toDevice(r.rows[0]);
    },
    async listForUser(userId: string): Promise<Device[]> {
      const r = await db.query<Row>('SELECT * FROM devices WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC', [userId]);
      return r.rows.map(toDevice);
    },
    async find(userId: string, id: string): Promise<Device | undefined> {
      const r = await db.query<Row>('SELECT * FROM devices WHERE user_id = $1 AND id = $2', [userId, id]);
      return r.rows[0] && toDevice(r.rows[0]);
    },
    async markRevoked(id: string): Promise<void> {
      await db.query('UPDATE devices SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL', [id]);
    },
  };
}
export type Devices = ReturnType<typeof createDevices>;

// --- oidc-provider configuration -----------------------------------------------------------------

export interface DeviceFlowDeps {
  config: Config;
  kv: Kv;
  audit: Audit;
  log: Logger;
  devices: Devices;
}

const pendingNameKey = (userCode: string) => `device-name:${hash(normalizeUserCode(userCode))}`;

/** The xsrf value inside oidc-provider's generated form (its pages and ours post the same fields). */
const xsrfOf = (form: string) => /name="xsrf" value="([^"]*)"/.exec(form)?.[1] ?? '';

function page(ctx: KoaContextWithOIDC, view: string, locals: Record<string, unknown>) {
  ctx.type = 'html';
  ctx.set('Cache-Control', 'no-store');
  ctx.body = render(view, locals);
}

function inputError(err: Error | undefined): string | undefined {
  if (!err) return undefined;
  switch (err.name) {
    case 'NoCodeError':
    case 'NotFoundError':
      return 'That code is not right. Check the code on your device and try again.';
    case 'ExpiredError':
      return 'That code has expired. Ask your device for a new one.';
    case 'AlreadyUsedError':
      return 'That code has already been used.';
    case 'AbortedError':
      return 'Sign-in was cancelled. Your device will not be signed in.';
    default:
      return 'Something went wrong. Ask your device for a new code and try again.';
  }
}

/**
 * Configuration for oidc-provider: our pages for the device flow, device_name as an extra parameter
 * of /device/auth, and a fresh grant for every device sign-in (so one device can be revoked alone).
 */
export function configureDeviceFlow(deps: DeviceFlowDeps) {
  return function configureDevices(configuration: Configuration) {
    const features = (configuration.features ??= {});
    features.deviceFlow = {
      enabled: true,
      charset: 'base-20',
      mask: MASK,
      deviceInfo(ctx) {
        // Shown on the confirmation page; the name is the device's suggestion, the person decides.
        return { ip: ctx.ip, ua: ctx.get('user-agent').slice(0, 300), name: cleanName(ctx.oidc.params?.device_name) };
      },
      async userCodeInputSource(ctx, form, _out, err) {
        page(ctx, 'device-code', {
          title: 'Connect a device',
          action: ctx.oidc.urlFor('code_verification'),
          xsrf: xsrfOf(form),
          userCode: (err as { userCode?: string } | undefined)?.userCode ?? '',
          error: inputError(err),
          aborted: err?.name === 'AbortedError',
        });
      },
      async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
        const info = deviceInfo as { name?: string; ip?: string } | undefined;
        page(ctx, 'device-confirm', {
          title: 'Confirm the device',
          action: ctx.oidc.urlFor('code_verification'),
          xsrf: xsrfOf(form),
          userCode,
          clientName: client.clientName ?? client.clientId,
          deviceName: info?.name || client.clientName || 'My device',
          nameMax: NAME_MAX,
        });
      },
      async successSource(ctx) {
        const code = ctx.oidc.entities.DeviceCode as unknown as { accountId: string; grantId: string; clientId: string; userCode: string; deviceInfo?: { name?: string; ip?: string; ua?: string } };
        const client = ctx.oidc.client!;
        // Read and removed at once (GETDEL): the name the user typed belongs to this one confirmation.
        const chosen = await deps.kv.take(pendingNameKey(code.userCode)).catch(() => null);
        const name = cleanName(chosen) || code.deviceInfo?.name || client.clientName || 'Device';
        const device = await deps.devices.record({
          userId: code.accountId, clientId: code.clientId, grantId: code.grantId, name, ip: code.deviceInfo?.ip, userAgent: code.deviceInfo?.ua,
        });
        await deps.audit.record({ type: 'device.authorize', subject: code.accountId, clientId: code.clientId, ip: ctx.ip, requestId: (ctx.state as { requestId?: string }).requestId ?? null, details: { device_id: device.id, name, grant_id: code.grantId } });
        page(ctx, 'device-success', { title: 'Device connected', clientName: client.clientName ?? client.clientId, deviceName: name });
      },
    };

    // device_name (a Gatehouse extension, not RFC 8628): the device suggests what to call it.
    const extra = configuration.extraParams;
    if (Array.isArray(extra)) configuration.extraParams = [...new Set([...extra, 'device_name'])];
    else if (extra && typeof extra === 'object') configuration.extraParams = { ...extra, device_name: undefined } as never;
    else configuration.extraParams = ['device_name'];

    // oidc-provider reuses the grant a session already has for the client. A second device of the
    // same client would then share the first one's grant, and revoking one would revoke both: the
    // device routes start a new grant unless this very interaction just consented to one.
    const defaultLoadExistingGrant = configuration.loadExistingGrant;
    configuration.loadExistingGrant = async function loadGrantPerDevice(ctx) {
      const consented = ctx.oidc.result?.consent?.grantId;
      if (ctx.oidc.route === 'code_verification' || ctx.oidc.route === 'device_resume') {
        return consented ? ctx.oidc.provider.Grant.find(consented) : undefined;
      }
      if (defaultLoadExistingGrant) return defaultLoadExistingGrant(ctx);
      const grantId = consented ?? ctx.oidc.session?.grantIdFor(ctx.oidc.client!.clientId);
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    };
  };
}

// --- middleware in front of oidc-provider --------------------------------------------------------


/** RFC 8628 §3.5 slow_down: a 400 token error, as the token endpoint answers every grant error. */
export class SlowDown extends HttpError {
  constructor(interval: number) {
    super(400, 'slow_down', `polling too fast; wait at least ${interval} seconds between requests`);
  }
}

/**
 * - POST /device/auth: add `interval` (RFC 8628 §3.2) to oidc-provider's answer.
 * - POST /device (the confirmation form): keep the name the person gave the device until the
 *   sign-in completes (successSource stores it with the device).
 * - POST /token with the device_code grant: refuse polls faster than the device's interval with
 *   slow_down, and raise that device's interval by 5 seconds. Kept in the Kv, so it holds across nodes.
 */
export function devicePolling(deps: { config: Config; kv: Kv }) {
  const limit = 56 * 1024;
  const ttl = deps.config.DEVICE_CODE_TTL;

  // One atomic gate per device code and interval (SET NX PX): of polls that arrive together, on one
  // node or several, one passes and the rest get slow_down. A read-then-write of "last poll" let
  // every parallel poll through (issue 20). Each slow_down adds 5 s to the device's interval.
  async function checkPollRate(deviceCode: string) {
    const h = hash(deviceCode);
    const slowDowns = Number((await deps.kv.get(`device-slow:${h}`)) ?? 0);
    const interval = deps.config.DEVICE_POLL_INTERVAL + SLOW_DOWN_STEP * slowDowns;
    if (await deps.kv.setIfAbsent(`device-poll:${h}`, '1', interval * 1000 - POLL_TOLERANCE_MS)) return;
    const longer = deps.config.DEVICE_POLL_INTERVAL + SLOW_DOWN_STEP * (await deps.kv.incr(`device-slow:${h}`, ttl));
    // The wait restarts from this poll, at the new interval.
    await deps.kv.set(`device-poll:${h}`, '1', longer - POLL_TOLERANCE_MS / 1000);
    throw new SlowDown(longer);
  }

  return async function deviceFlowDiscipline(ctx: Context, next: Next) {
    if (ctx.method !== 'POST') return next();
    // RFC 8628 §3.2 and CIBA Core §7.3: the answer names the interval the poll gate enforces.
    if (ctx.path === '/device/auth' || ctx.path === '/backchannel') {
      await next();
      if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object' && ('device_code' in ctx.body || 'auth_req_id' in ctx.body)) {
        (ctx.body as Record<string, unknown>).interval = deps.config.DEVICE_POLL_INTERVAL;
      }
      return;
    }
    const isToken = ctx.path === '/token';
    const isConfirm = ctx.path === '/device';
    // The code form is posted back to the browser session GET /device started (its xsrf lives
    // there). Without that cookie oidc-provider fails while saving a session it never loaded (500);
    // tell the person what to do instead.
    if (isConfirm && !ctx.cookies.get('_session')) {
      ctx.state.html = true;
      throw new InvalidRequest('This page has expired or cookies are blocked. Open the device sign-in page again and enter the code shown on your device.');
    }
    if (!(isToken || isConfirm) || !ctx.is('application/x-www-form-urlencoded')) return next();
    const raw = await readRawBody(ctx, limit);
    const form = new URLSearchParams(raw);
    handBodyToProvider(ctx, raw);
    if (isToken && form.get('grant_type') === DEVICE_CODE_GRANT && form.get('device_code')) {
      await checkPollRate(form.get('device_code')!);
    }
    // CIBA Core §11: the same polling discipline (interval, slow_down) for a backchannel request.
    if (isToken && form.get('grant_type') === 'urn:openid:params:grant-type:ciba' && form.get('auth_req_id')) {
      await checkPollRate(form.get('auth_req_id')!);
    }
    if (isConfirm && form.get('confirm') && form.get('user_code')) {
      const name = cleanName(form.get('device_name'));
      if (name) await deps.kv.set(pendingNameKey(form.get('user_code')!), name, ttl);
    }
    return next();
  };
}

// --- the user's own devices ----------------------------------------------------------------------

export interface DeviceAccountDeps {
  provider: () => Provider;
  config: Config;
  db: Queryable;
  log: Logger;
  audit: Audit;
  revocations: RevocationService;
  devices: Devices;
}

/**
 * /account/devices behind the browser session (the same `_session` cookie the sign-in set):
 *   GET  /account/devices                 page, or JSON with Accept: application/json
 *   POST /account/devices/:id/revoke      form post with the CSRF field (from the page)
 *   DELETE /account/devices/:id           JSON clients on the same origin (DELETE is never a simple cross-site request)
 * Revoking a device revokes its grant: refresh tokens stop at once and every token derived from the
 * grant (exchanged LiveKit and MCP tokens included) is on the revocation list.
 */
export function createDeviceAccountRouter(deps: DeviceAccountDeps): Router {
  const router = new Router({ prefix: '/account/devices' });
  const secure = deps.config.ISSUER.startsWith('https://');
  const wantsJson = (ctx: Context) => ctx.accepts('html', 'json') === 'json';

  async function signedInUser(ctx: Context): Promise<string> {
    const accountId = await sessionAccountId(deps.provider(), ctx);
    if (!accountId) throw new InvalidToken('Sign in first: open this page from a browser that is signed in to Gatehouse.');
    return accountId;
  }

  async function revoke(ctx: Context, userId: string, id: string) {
    const device = await deps.devices.find(userId, id);
    if (!device || device.revokedAt) throw new NotFound('No such device.');
    await revokeAsOperator(deps, { kind: 'grant', id: device.grantId });
    await deps.devices.markRevoked(device.id);
    await deps.audit.record({ type: 'device.revoke', actor: userId, subject: userId, clientId: device.clientId, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details: { device_id: device.id, grant_id: device.grantId } });
  }

  router.use(async function noStore(ctx: Context, next: Next) {
    ctx.set('Cache-Control', 'no-store');
    if (!wantsJson(ctx)) ctx.state.html = true;
    await next();
  });

  router.get('/', async function listDevices(ctx: Context) {
    const userId = await signedInUser(ctx);
    const devices = await deps.devices.listForUser(userId);
    if (wantsJson(ctx)) {
      ctx.body = { devices: devices.map((d) => ({ id: d.id, name: d.name, client_id: d.clientId, created_at: d.createdAt })) };
      return;
    }
    ctx.type = 'html';
    ctx.body = render('device-list', { title: 'Your devices', devices, csrf: issueCsrf(ctx, { secure }) });
  });

  router.post('/:id/revoke', async function revokeDeviceForm(ctx: Context) {
    const form = new URLSearchParams(await readRawBody(ctx, 4096));
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const userId = await signedInUser(ctx);
    await revoke(ctx, userId, ctx.params.id);
    ctx.redirect('/account/devices');
    ctx.status = 303;
  });

  router.delete('/:id', async function revokeDevice(ctx: Context) {
    const userId = await signedInUser(ctx);
    if (!ctx.params.id) throw new InvalidRequest('device id is required');
    await revoke(ctx, userId, ctx.params.id);
    ctx.status = 204;
  });

  return router;
}
