// LiveKit options (issue 18.5), per client or role, through the CLI and the admin API: the room-name
// prefix (applied when missing) and the token's roomConfig (participant limit, empty and departure
// timeouts), on connection-details and on the token exchange alike; one identity per device
// (user_<sub>_<device>), mapped back to the user for room sessions and revocation; the participant
// name from the profile, which the user edits on the account page. And CORS on connection-details
// for the origins of the client's redirect URIs, checked in real Chromium from two other origins.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { launchChromium } from './helpers/chromium.ts';
import { Browser, CALLBACK, codeFlow, describeEachMode, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { fakeRoomService, signWebhook, webhookEvent, type FakeRoomService } from './helpers/livekit.ts';

const KEY = 'APIoptionstest';
const SECRET = 'options-secret-'.padEnd(40, 'o');
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const LIVEKIT = 'urn:gatehouse:token-type:livekit';
type Claims = { sub: string; name?: string; video: { room: string }; roomConfig?: Record<string, unknown> };

/** A page server on localhost (another origin than Gatehouse's 127.0.0.1). */
async function pageServer() {
  const server = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>app</title>'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { origin: `http://localhost:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describeEachMode('LiveKit options', (mode) => {
  let gh: TestGatehouse;
  let lk: FakeRoomService;
  let app: Awaited<ReturnType<typeof pageServer>>;
  let web: { client_id: string; client_secret: string };
  let user: { id: string; email: string; token: string };
  const PASSWORD = 'options user passphrase';

  const details = async (token: string, body: Record<string, unknown>) => {
    const res = await fetch(`${gh.url}/livekit/connection-details`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    const json = await res.json();
    return { status: res.status, body: json, claims: json.participantToken ? decodeJwt(json.participantToken) as Claims : undefined };
  };
  const exchange = async (params: Record<string, string>) => {
    const res = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: TX, subject_token: user.token, subject_token_type: AT, requested_token_type: LIVEKIT, ...params }),
    });
    const json = await res.json();
    return { status: res.status, body: json, claims: json.access_token ? decodeJwt(json.access_token) as Claims : undefined };
  };

  beforeAll(async () => {
    lk = await fakeRoomService(KEY, SECRET);
    app = await pageServer();
    gh = await startTestGatehouse({ mode, env: { LIVEKIT_URL: lk.url, LIVEKIT_API_KEY: KEY, LIVEKIT_API_SECRET: SECRET } });
    const c = await gh.cli('client', 'create', '--name', 'Voice app', '--redirect-uri', CALLBACK, '--redirect-uri', `${app.origin}/callback`,
      '--grant', 'authorization_code', '--grant', TX, '--first-party');
    web = { client_id: c.client_id, client_secret: c.client_secret };
    await gh.cli('policy', 'client', 'set', web.client_id, '--livekit');
    await gh.cli('policy', 'role', 'set', 'user', '--room', '{identity}_*', '--room', 'acme_{identity}_*', '--publish', '--subscribe', '--data');
    const email = 'options@example.com';
    const id = (await gh.cli('user', 'create', '--email', email, '--password', PASSWORD, '--role', 'user')).id as string;
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: { email, password: PASSWORD }, scope: 'openid profile' });
    user = { id, email, token: tokens.access_token };
  }, 90_000);
  afterAll(async () => {
    await gh?.close();
    await app?.close();
    await lk?.close();
  });

  it('applies the client’s and the role’s options: room prefix and roomConfig, on connection-details and the exchange', async () => {
    // The client's options win; the role fills in what the client leaves unset.
    await gh.cli('livekit', 'options', 'set', '--role', 'user', '--max-participants', '8', '--empty-timeout', '300', '--departure-timeout', '20');
    expect(await gh.cli('livekit', 'options', 'set', '--client', web.client_id, '--room-prefix', 'acme_', '--max-participants', '4'))
      .toEqual({ scope: 'client', name: web.client_id, room_prefix: 'acme_', max_participants: 4 });
    const config = { maxParticipants: 4, emptyTimeout: 300, departureTimeout: 20 };

    const named = await details(user.token, { room_name: `user_${user.id}_standup` });
    expect(named.status, JSON.stringify(named.body)).toBe(200);
    expect(named.body.roomName).toBe(`acme_user_${user.id}_standup`);
    expect(named.claims!.video.room).toBe(`acme_user_${user.id}_standup`);
    expect(named.claims!.roomConfig).toMatchObject(config);
    // Already carrying the prefix: unchanged. None asked for: a generated one, prefixed.
    expect((await details(user.token, { room_name: `acme_user_${user.id}_x` })).body.roomName).toBe(`acme_user_${user.id}_x`);
    expect((await details(user.token, {})).body.roomName).toMatch(new RegExp(`^acme_user_${user.id}_\\d+_[0-9a-f]{12}$`));

    const exchanged = await exchange({ room: `user_${user.id}_standup` });
    expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
    expect(exchanged.body.room_name).toBe(`acme_user_${user.id}_standup`);
    expect(exchanged.claims!.roomConfig).toMatchObject(config);

    // Without options, no roomConfig at all.
    await gh.cli('livekit', 'options', 'delete', '--client', web.client_id);
    await gh.cli('livekit', 'options', 'delete', '--role', 'user');
    const plain = await details(user.token, { room_name: `user_${user.id}_plain` });
    expect([plain.body.roomName, plain.claims!.roomConfig]).toEqual([`user_${user.id}_plain`, undefined]);
    expect(await gh.cli('livekit', 'options', 'list')).toEqual([]);
  });

  it('refuses options out of range with a message naming them, in the CLI and the admin API', async () => {
    await expect(gh.cli('livekit', 'options', 'set', '--client', web.client_id, '--max-participants', '0')).rejects.toThrow(/max participants must be a whole number from 1/);
    await expect(gh.cli('livekit', 'options', 'set', '--role', 'user', '--room-prefix', 'bad prefix!')).rejects.toThrow(/room prefix/);
    await expect(gh.cli('livekit', 'options', 'set', '--client', 'no-such-client')).rejects.toThrow(/no client no-such-client/);
    await expect(gh.cli('livekit', 'options', 'set', '--client', web.client_id, '--role', 'user')).rejects.toThrow(/exactly one of --client/);

    const robot = await gh.cli('client', 'create', '--name', 'robot', '--grant', 'client_credentials');
    await gh.cli('client', 'admin-api', robot.client_id, '--full');
    const api = `${gh.url}/admin/api`;
    const tokenRes = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${robot.client_id}:${robot.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: api, scope: 'gatehouse:admin gatehouse:admin:read' }),
    });
    const admin = (await tokenRes.json()).access_token as string;
    const put = (path: string, body: unknown) => fetch(`${api}${path}`, { method: 'PUT', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const bad = await put(`/livekit/options/roles/user`, { empty_timeout: -1 });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/empty-timeout/) });
    const ok = await put(`/livekit/options/roles/user`, { max_participants: 2, departure_timeout: 30 });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ scope: 'role', name: 'user', max_participants: 2, departure_timeout: 30 });
    const got = await fetch(`${api}/livekit/options/roles/user`, { headers: { authorization: `Bearer ${admin}` } });
    expect(await got.json()).toEqual({ scope: 'role', name: 'user', max_participants: 2, departure_timeout: 30 });
    expect((await details(user.token, { room_name: `user_${user.id}_small` })).claims!.roomConfig).toMatchObject({ maxParticipants: 2, departureTimeout: 30, emptyTimeout: 0 });
    expect((await fetch(`${api}/livekit/options/roles/user`, { method: 'DELETE', headers: { authorization: `Bearer ${admin}` } })).status).toBe(204);
    expect((await fetch(`${api}/livekit/options/roles/user`, { headers: { authorization: `Bearer ${admin}` } })).status).toBe(404);
  });

  it('gives each device its own identity, maps both back to the user, and removes both at revocation', async () => {
    const room = `user_${user.id}_devices`;
    const phone = await details(user.token, { room_name: room, device_id: 'phone' });
    const laptop = await details(user.token, { room_name: room, device_id: 'laptop-2' });
    expect([phone.claims!.sub, laptop.claims!.sub]).toEqual([`user_${user.id}_phone`, `user_${user.id}_laptop-2`]);
    // The exchange takes device_id too; the room policy ({identity}) is the person's, not the device's.
    const tablet = await exchange({ room, device_id: 'tablet' });
    expect([tablet.status, tablet.body.participant_identity]).toEqual([200, `user_${user.id}_tablet`]);
    for (const bad of ['a_b', '', 'x'.repeat(65), 'ph one']) {
      const refused = await details(user.token, { room_name: room, device_id: bad });
      expect([refused.status, refused.body.error], bad).toEqual([400, 'invalid_request']);
    }
    expect((await exchange({ room, device_id: 'a_b' })).body.error).toBe('invalid_request');

    // LiveKit reports both joins: both are this user's room sessions.
    for (const [sid, d] of [['PA_phone', phone], ['PA_laptop', laptop]] as const) {
      const attributes = (decodeJwt(d.body.participantToken) as { attributes: Record<string, string> }).attributes;
      const body = webhookEvent('participant_joined', { room: { name: room, sid: 'RM_d' }, participant: { sid, identity: d.claims!.sub, attributes } });
      expect((await fetch(`${gh.url}/livekit/webhook`, { method: 'POST', headers: { 'content-type': 'application/webhook+json', authorization: await signWebhook(body, KEY, SECRET) }, body })).status).toBe(200);
    }
    const rows = (await gh.deps.db.query<{ participant_identity: string; user_id: string }>(
      'SELECT participant_identity, user_id FROM room_sessions WHERE room_name = $1 ORDER BY participant_identity', [room])).rows;
    expect(rows).toEqual([
      { participant_identity: `user_${user.id}_laptop-2`, user_id: user.id },
      { participant_identity: `user_${user.id}_phone`, user_id: user.id },
    ]);
    expect(lk.calls).toEqual([]);
    await gh.cli('revoke', '--user', user.id);
    for (let i = 0; i < 200 && lk.calls.length < 2; i++) await new Promise((r) => setTimeout(r, 25));
    expect(lk.calls.map((c) => c.identity).sort()).toEqual([`user_${user.id}_laptop-2`, `user_${user.id}_phone`]);
    const revokedAt = Math.floor(Date.now() / 1000);
    // Sign in again (a token issued in the revocation's second is revoked too): the next tests need one.
    while (Math.floor(Date.now() / 1000) <= revokedAt) await new Promise((r) => setTimeout(r, 50));
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: { email: user.email, password: PASSWORD }, scope: 'openid profile' });
    user.token = tokens.access_token;
  });

  it('names the participant from the profile, which the user changes on the account page', async () => {
    const room = `user_${user.id}_names`;
    expect((await details(user.token, { room_name: room, participant_name: 'Asked For' })).body.participantName).toBe('Asked For');
    const browser = new Browser();
    let step = await browser.follow(`${gh.url}/account`, gh.url);
    const login = formOf(step.html!, '/login');
    step = await browser.follow(new URL(login.action, gh.url).href, gh.url, { form: { ...login.fields, email: user.email, password: PASSWORD } });
    let form = formOf(step.html!, '/account/name');
    const tooLong = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, name: 'x'.repeat(129) } });
    expect(tooLong.html).toContain('at most 128 characters');
    form = formOf(tooLong.html!, '/account/name');
    step = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, name: '  Olga Options ' } });
    expect(step.html).toContain('value="Olga Options"');
    const named = await details(user.token, { room_name: room, participant_name: 'Asked For' });
    expect([named.body.participantName, named.claims!.name]).toEqual(['Olga Options', 'Olga Options']);
    expect((await exchange({ room })).claims!.name).toBe('Olga Options');
    const audited = await gh.deps.db.query("SELECT 1 FROM audit_events WHERE type = 'account.name_change' AND subject = $1", [user.id]);
    expect(audited.rows).toHaveLength(1);
  });

  if (mode === 'embedded') {
    it('answers CORS for the origins of the client’s redirect URIs, in Chromium; another origin is blocked', async () => {
      const other = await pageServer();
      const browser = await launchChromium();
      try {
        const call = async (origin: string) => {
          const page = await browser.newPage();
          await page.goto(`${origin}/`);
          return page.evaluate(async ({ url, token }) => {
            try {
              const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
              return { status: res.status, body: await res.json() };
            } catch (err) {
              return { error: String(err) };
            }
          }, { url: `${gh.url}/livekit/connection-details`, token: user.token });
        };
        const registered = await call(app.origin);
        expect(registered).toMatchObject({ status: 200, body: { serverUrl: lk.url, participantToken: expect.any(String) } });
        expect(await call(other.origin)).toEqual({ error: expect.stringMatching(/TypeError: Failed to fetch/) });
        // What Chromium asked first: a preflight, answered only for the registered origin.
        const preflight = (origin: string) => fetch(`${gh.url}/livekit/connection-details`, {
          method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
        });
        const ok = await preflight(app.origin);
        expect([ok.status, ok.headers.get('access-control-allow-origin'), ok.headers.get('access-control-allow-headers')]).toEqual([204, app.origin, 'authorization, content-type']);
        expect((await preflight(other.origin)).headers.get('access-control-allow-origin')).toBeNull();
      } finally {
        await browser.close();
        await other.close();
      }
    }, 60_000);
  }
});
