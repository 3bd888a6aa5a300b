// LiveKit webhooks (signed as LiveKit signs them, with the SDK's AccessToken) record room sessions;
// anything unverified is 401 and records nothing. Revoking a user, a grant (RFC 7009 refresh token)
// or a session (logout) removes that user's live participants through RoomServiceClient, against a
// stand-in Twirp endpoint that verifies the SDK's JWT; a LiveKit that hangs or fails never holds up
// the revocation, is retried, and every outcome is audited. A user lists their own room sessions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeRoomService, signWebhook, webhookEvent as event, type FakeRoomService } from './helpers/livekit.ts';
import { Browser, CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const KEY = 'APIwebhooktest';
const SECRET = 'webhook-secret-'.padEnd(40, 'y');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const sign = (body: string, secret = SECRET, key = KEY) => signWebhook(body, key, secret);

describe('LiveKit webhooks and participant removal', () => {
  let gh: TestGatehouse;
  let lk: FakeRoomService;
  let user: { id: string; email: string };
  let web: { client_id: string; client_secret: string };
  let n = 0;
  const PASSWORD = 'a long enough passphrase';
  const rows = async () => (await gh.deps.db.query<any>('SELECT * FROM room_sessions ORDER BY joined_at')).rows;
  /** Polls until `done` holds (or `rounds` × 25 ms pass); the assertion after it says what was expected. */
  const until = async (done: () => boolean | Promise<boolean>, rounds = 200) => {
    for (let i = 0; i < rounds && !(await done()); i++) await sleep(25);
  };
  const removalsOf = (identity: string) => lk.calls.filter((c) => c.identity === identity);
  const removalAudits = async (identity: string) => (await gh.deps.db.query<{ outcome: string; details: Record<string, any> }>(
    "SELECT outcome, details FROM audit_events WHERE type = 'livekit.participant.remove' AND details->>'identity' = $1 ORDER BY id", [identity])).rows;

  /** A fresh user signed in at the web client (opaque access token, refresh token, ID token), in a room. */
  async function signedInUserInRoom(room: string) {
    const email = `lk${++n}@example.com`;
    const id = (await gh.cli('user', 'create', '--email', email, '--password', PASSWORD)).id as string;
    const browser = new Browser();
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: { email, password: PASSWORD }, scope: 'openid offline_access', browser });
    const identity = `user_${id}`;
    const j = joined(room, `PA_${room}`, identity);
    expect(await post(j, await sign(j))).toBe(200);
    return { id, identity, browser, access: tokens.access_token, refresh: tokens.refresh_token!, idToken: tokens.id_token! };
  }
  const tokenRequest = (path: string, params: Record<string, string>) => fetch(`${gh.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(params),
  });

  const post = async (body: string, authorization?: string) => {
    const res = await fetch(`${gh.url}/livekit/webhook`, {
      method: 'POST',
      headers: { 'content-type': 'application/webhook+json', ...(authorization !== undefined ? { authorization } : {}) },
      body,
    });
    return res.status;
  };
  const joined = (room: string, sid: string, identity: string, joinedAt = Math.floor(Date.now() / 1000) - 60) =>
    event('participant_joined', { room: { name: room, sid: `RM_${room}` }, participant: { sid, identity, joinedAt: String(joinedAt) } });

  beforeAll(async () => {
    lk = await fakeRoomService(KEY, SECRET);
    gh = await startTestGatehouse({ env: { LIVEKIT_URL: lk.url, LIVEKIT_API_KEY: KEY, LIVEKIT_API_SECRET: SECRET } });
    const u = await gh.cli('user', 'create', '--email', 'lk@example.com', '--password', 'a long enough passphrase');
    user = { id: u.id, email: u.email };
    const c = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--post-logout-redirect-uri', 'http://127.0.0.1:8976/bye',
      '--grant', 'authorization_code', '--grant', 'refresh_token');
    web = { client_id: c.client_id, client_secret: c.client_secret };
  }, 60_000);
  afterAll(async () => {
    await gh?.close();
    await lk?.close();
  });

  it('refuses a missing header, a wrong key and a tampered body with 401, recording nothing', async () => {
    const body = joined('r0', 'PA_x', `user_${user.id}`);
    expect(await post(body)).toBe(401);
    expect(await post(body, await sign(body, 'another-secret-'.padEnd(40, 'z')))).toBe(401);
    expect(await post(body.replace('r0', 'r1'), await sign(body))).toBe(401);
    expect(await post(body, 'not a jwt')).toBe(401);
    expect(await rows()).toHaveLength(0);
  });

  it('records joins and leaves idempotently, and room_finished closes open sessions', async () => {
    const identity = `user_${user.id}`;
    const j1 = joined('standup', 'PA_1', identity);
    expect(await post(j1, await sign(j1))).toBe(200);
    expect(await post(j1, await sign(j1))).toBe(200); // LiveKit retries
    const guest = joined('standup', 'PA_2', 'guest_abc');
    expect(await post(guest, await sign(guest))).toBe(200);
    let r = await rows();
    expect(r).toHaveLength(2);
    expect(r.find((x) => x.participant_sid === 'PA_1')).toMatchObject({ room_name: 'standup', user_id: user.id, participant_identity: identity, left_at: null });
    expect(r.find((x) => x.participant_sid === 'PA_2').user_id).toBeNull();

    const left = event('participant_left', { room: { name: 'standup', sid: 'RM_standup' }, participant: { sid: 'PA_1', identity } });
    expect(await post(left, await sign(left))).toBe(200);
    expect(await post(left, await sign(left))).toBe(200);
    const finished = event('room_finished', { room: { name: 'standup', sid: 'RM_standup' } });
    expect(await post(finished, await sign(finished))).toBe(200);
    r = await rows();
    const mine = r.find((x) => x.participant_sid === 'PA_1');
    expect(mine.end_reason).toBe('participant_left');
    expect(mine.duration_seconds).toBeGreaterThanOrEqual(59);
    expect(r.find((x) => x.participant_sid === 'PA_2')).toMatchObject({ end_reason: 'room_finished' });
    expect(r.every((x) => x.left_at)).toBe(true);
  });

  it('removes the user\'s live participants when the user is revoked', async () => {
    const identity = `user_${user.id}`;
    for (const [room, sid] of [['live-a', 'PA_10'], ['live-b', 'PA_11']]) {
      const j = joined(room, sid, identity);
      expect(await post(j, await sign(j))).toBe(200);
    }
    await gh.cli('revoke', '--user', user.id);
    for (let i = 0; i < 100 && lk.calls.length < 2; i++) await sleep(20);
    expect(lk.calls.sort((x, y) => x.room.localeCompare(y.room))).toEqual([
      { room: 'live-a', identity },
      { room: 'live-b', identity },
    ]);
    for (let i = 0; i < 50; i++) {
      const audited = await gh.deps.db.query("SELECT details FROM audit_events WHERE type = 'livekit.participant.remove' AND outcome = 'success'");
      if (audited.rows.length >= 2) break;
      await sleep(20);
    }
    expect((await gh.deps.db.query("SELECT 1 FROM audit_events WHERE type = 'livekit.participant.remove' AND outcome = 'success'")).rows.length).toBeGreaterThanOrEqual(2);
  });

  it("removes the user's live participants when a grant is revoked (RFC 7009, refresh token)", async () => {
    const u = await signedInUserInRoom('grant-room');
    expect((await tokenRequest('/token/revocation', { token: u.refresh })).status).toBe(200);
    await until(() => removalsOf(u.identity).length > 0);
    expect(removalsOf(u.identity)).toEqual([{ room: 'grant-room', identity: u.identity }]);
    await until(async () => (await removalAudits(u.identity)).length > 0);
    expect(await removalAudits(u.identity)).toMatchObject([{ outcome: 'success', details: { room: 'grant-room', revocation: 'grant', reason: 'token_revocation' } }]);
  });

  it("removes the user's live participants when their session ends (RP-initiated logout)", async () => {
    const u = await signedInUserInRoom('session-room');
    const start = await u.browser.follow(`${gh.url}/session/end?id_token_hint=${encodeURIComponent(u.idToken)}&post_logout_redirect_uri=${encodeURIComponent('http://127.0.0.1:8976/bye')}`, gh.url);
    const { action, fields } = formOf(start.html!, '/session/end/confirm');
    const done = await u.browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, logout: 'yes' } });
    expect(done.url).toMatch(/^http:\/\/127\.0\.0\.1:8976\/bye/);
    await until(async () => (await removalAudits(u.identity)).some((a) => a.details.revocation === 'session'));
    expect(removalsOf(u.identity).every((c) => c.room === 'session-room')).toBe(true);
    expect((await removalAudits(u.identity)).filter((a) => a.details.revocation === 'session'))
      .toMatchObject([{ outcome: 'success', details: { room: 'session-room', identity: u.identity, reason: 'logout' } }]);
  });

  it("removes the live participants of a user who deletes their account (/account/delete, which also drops room history)", async () => {
    const u = await signedInUserInRoom('farewell-room');
    // An ended session of the same user: it goes with the account at once.
    const before = joined('earlier-room', 'PA_earlier-room', u.identity, Math.floor(Date.now() / 1000) - 120);
    expect(await post(before, await sign(before))).toBe(200);
    const gone = event('participant_left', { room: { name: 'earlier-room', sid: 'RM_earlier-room' }, participant: { sid: 'PA_earlier-room', identity: u.identity } });
    expect(await post(gone, await sign(gone))).toBe(200);
    const email = (await gh.deps.db.query<{ email: string }>('SELECT email FROM users WHERE id = $1', [u.id])).rows[0].email;
    const browser = new Browser();
    let step = await browser.follow(`${gh.url}/account/delete`, gh.url);
    const login = formOf(step.html!, '/login');
    step = await browser.follow(new URL(login.action, gh.url).href, gh.url, { form: { ...login.fields, email, password: PASSWORD } });
    const confirm = formOf(step.html!, '/account/delete');
    const done = await browser.follow(new URL(confirm.action, gh.url).href, gh.url, { form: { ...confirm.fields, password: PASSWORD } });
    expect(done.html).toContain('Account deleted');
    // The ended session is gone; the open one stays for participant removal to read (on any node).
    const sessionsOf = async () => (await gh.deps.db.query<{ participant_sid: string }>('SELECT participant_sid FROM room_sessions WHERE user_id = $1', [u.id])).rows.map((r) => r.participant_sid);
    expect(await sessionsOf()).toEqual(['PA_farewell-room']);
    await until(() => removalsOf(u.identity).length > 0);
    expect(removalsOf(u.identity)).toEqual([{ room: 'farewell-room', identity: u.identity }]);
    // LiveKit reports the removal as a leave: the last record of the deleted account goes then.
    const left = event('participant_left', { room: { name: 'farewell-room', sid: 'RM_farewell-room' }, participant: { sid: 'PA_farewell-room', identity: u.identity } });
    expect(await post(left, await sign(left))).toBe(200);
    expect(await sessionsOf()).toEqual([]);
  });

  it('a LiveKit that does not answer does not hold up the revocation', async () => {
    const u = await signedInUserInRoom('hung-room');
    lk.hold();
    const before = lk.attempts;
    try {
      await gh.cli('revoke', '--user', u.id);
      // The revocation is in force while LiveKit still has not answered the removal.
      await until(() => lk.attempts > before);
      expect(lk.attempts).toBeGreaterThan(before);
      expect(removalsOf(u.identity)).toEqual([]);
      expect(await gh.deps.revocations.check({ sub: u.id, iat: Math.floor(Date.now() / 1000) - 1 })).toBe('user');
      expect((await tokenRequest('/token/introspection', { token: u.access }).then((r) => r.json()))).toEqual({ active: false });
    } finally {
      lk.release();
    }
    await until(() => removalsOf(u.identity).length > 0);
    expect(removalsOf(u.identity)).toEqual([{ room: 'hung-room', identity: u.identity }]);
  });

  it('a failing LiveKit is retried, and the final failure is audited', async () => {
    const u = await signedInUserInRoom('down-room');
    lk.fail(true);
    const before = lk.attempts;
    try {
      await gh.cli('revoke', '--user', u.id);
      expect(await gh.deps.revocations.check({ sub: u.id, iat: Math.floor(Date.now() / 1000) - 1 })).toBe('user');
      // First attempt + three retries (0.5 s, 2 s, 5 s apart), then one failure event.
      await until(async () => (await removalAudits(u.identity)).length > 0, 1200);
    } finally {
      lk.fail(false);
    }
    expect(lk.attempts - before).toBe(4);
    expect(removalsOf(u.identity)).toEqual([]);
    const audits = await removalAudits(u.identity);
    expect(audits).toMatchObject([{ outcome: 'failure', details: { room: 'down-room', identity: u.identity, revocation: 'user', reason: 'admin' } }]);
    expect(JSON.stringify(audits)).not.toContain(SECRET);
  });

  it('lets a user list their own room sessions (GET /livekit/sessions), and not with a revoked token', async () => {
    const res = await fetch(`${gh.url}/livekit/sessions`);
    expect(res.status).toBe(401);
    const u = await signedInUserInRoom('my-room');
    const left = event('participant_left', { room: { name: 'my-room', sid: 'RM_my-room' }, participant: { sid: 'PA_my-room', identity: u.identity } });
    expect(await post(left, await sign(left))).toBe(200);
    const j = joined('my-second-room', 'PA_my-second-room', u.identity, Math.floor(Date.now() / 1000) - 10);
    expect(await post(j, await sign(j))).toBe(200);
    const mine = await fetch(`${gh.url}/livekit/sessions`, { headers: { authorization: `Bearer ${u.access}` } });
    expect(mine.status).toBe(200);
    expect(mine.headers.get('cache-control')).toBe('no-store');
    const { sessions } = await mine.json();
    // Newest first; another user's rooms (live-a, standup, ...) are not listed.
    expect(sessions).toMatchObject([
      { room: 'my-second-room', participant_identity: u.identity, left_at: null, duration_seconds: null, end_reason: null },
      { room: 'my-room', participant_identity: u.identity, end_reason: 'participant_left', duration_seconds: expect.any(Number) },
    ]);
    expect(sessions[1].duration_seconds).toBeGreaterThanOrEqual(59);

    await gh.cli('revoke', '--session', (await gh.deps.db.query<{ uid: string }>("SELECT uid FROM oidc_payloads WHERE model = 'Session' AND payload->>'accountId' = $1", [u.id])).rows[0].uid);
    const revoked = await fetch(`${gh.url}/livekit/sessions`, { headers: { authorization: `Bearer ${u.access}` } });
    expect(revoked.status).toBe(401);
    expect(await revoked.json()).toMatchObject({ error: 'invalid_token' });
  });
});
