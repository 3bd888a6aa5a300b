// LiveKit webhooks (signed as LiveKit signs them, with the SDK's AccessToken) record room sessions;
// anything unverified is 401 and records nothing. Revoking a user removes their live participants
// through RoomServiceClient, against a stand-in Twirp endpoint that verifies the SDK's JWT.
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccessToken, TokenVerifier } from 'livekit-server-sdk';
import { startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const KEY = 'APIwebhooktest';
const SECRET = 'webhook-secret-'.padEnd(40, 'y');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** LiveKit's signing: a JWT (iss = API key) whose sha256 claim is base64(SHA-256(body)). */
async function sign(body: string, secret = SECRET, key = KEY) {
  const at = new AccessToken(key, secret);
  at.sha256 = crypto.createHash('sha256').update(body).digest('base64');
  return at.toJwt();
}

/** Stand-in for LiveKit's RoomService: records verified RemoveParticipant calls; can be made to fail. */
async function fakeRoomService() {
  const calls: { room: string; identity: string }[] = [];
  let failing = false;
  let attempts = 0;
  const verifier = new TokenVerifier(KEY, SECRET);
  const server = http.createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    if (req.url !== '/twirp/livekit.RoomService/RemoveParticipant') return res.writeHead(404).end();
    attempts++;
    try {
      const claims = await verifier.verify((req.headers.authorization ?? '').replace(/^Bearer /, ''));
      if (!claims.video?.roomAdmin) throw new Error('not room admin');
    } catch {
      return res.writeHead(401, { 'content-type': 'application/json' }).end('{"code":"unauthenticated","msg":"bad token"}');
    }
    if (failing) return res.writeHead(503, { 'content-type': 'application/json' }).end('{"code":"unavailable","msg":"down"}');
    const { room, identity } = JSON.parse(body);
    calls.push({ room, identity });
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    get attempts() { return attempts; },
    fail(v: boolean) { failing = v; },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('LiveKit webhooks and participant removal', () => {
  let gh: TestGatehouse;
  let lk: Awaited<ReturnType<typeof fakeRoomService>>;
  let user: { id: string; email: string };
  const rows = async () => (await gh.deps.db.query<any>('SELECT * FROM room_sessions ORDER BY joined_at')).rows;

  const post = async (body: string, authorization?: string) => {
    const res = await fetch(`${gh.url}/livekit/webhook`, {
      method: 'POST',
      headers: { 'content-type': 'application/webhook+json', ...(authorization !== undefined ? { authorization } : {}) },
      body,
    });
    return res.status;
  };
  const event = (name: string, extra: Record<string, unknown>) => JSON.stringify({
    event: name, id: crypto.randomUUID(), createdAt: String(Math.floor(Date.now() / 1000)), ...extra,
  });
  const joined = (room: string, sid: string, identity: string, joinedAt = Math.floor(Date.now() / 1000) - 60) =>
    event('participant_joined', { room: { name: room, sid: `RM_${room}` }, participant: { sid, identity, joinedAt: String(joinedAt) } });

  beforeAll(async () => {
    lk = await fakeRoomService();
    gh = await startTestGatehouse({ env: { LIVEKIT_URL: lk.url, LIVEKIT_API_KEY: KEY, LIVEKIT_API_SECRET: SECRET } });
    const u = await gh.cli('user', 'create', '--email', 'lk@example.com', '--password', 'a long enough passphrase');
    user = { id: u.id, email: u.email };
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

  it('a failing LiveKit does not block the revocation, and is retried', async () => {
    lk.calls.length = 0;
    lk.fail(true);
    const before = lk.attempts;
    const j = joined('live-c', 'PA_20', `user_${user.id}`);
    expect(await post(j, await sign(j))).toBe(200);
    const t0 = Date.now();
    await gh.cli('revoke', '--user', user.id);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(await gh.deps.revocations.check({ sub: user.id, iat: Math.floor(Date.now() / 1000) - 1 })).toBe('user');
    for (let i = 0; i < 100 && lk.attempts - before < 2; i++) await sleep(20);
    expect(lk.attempts - before).toBeGreaterThanOrEqual(2); // first attempt + a retry
    lk.fail(false);
  });

  it('lets a user list their room sessions', async () => {
    const res = await fetch(`${gh.url}/livekit/sessions`);
    expect(res.status).toBe(401);
  });
});
