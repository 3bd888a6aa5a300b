// Issue 19.4: no way back into a room after revocation. LiveKit renews a connected participant's
// token by itself and never asks about revocation, so a removed user can reconnect with what they
// hold. Against a LiveKit stand-in (Twirp RoomService verifying the SDK's JWT; webhooks signed as
// the SDK's WebhookReceiver expects), with room tokens from connection-details:
// - a revoked user (user, grant or session) who rejoins is removed again on every join and published
//   track, each removal recorded on that join's room session and audited; once signed in again
//   they may stay;
// - in a Gatehouse-only room (LIVEKIT_GATEHOUSE_ONLY=*_locked) a participant whose token Gatehouse
//   did not mint is removed (even one that copied a Gatehouse token's attribute), LiveKit's own
//   agents stay, and outside such rooms nobody is removed for that;
// - a valid user is never removed;
// - with PostgreSQL + Redis, another Gatehouse process that gets the webhook removes the rejoin too;
//   when Redis is unreachable the check fails closed: removed, and why.
// The webhook answers after the first removal attempt, so each assertion right after it is exact.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { CALLBACK, codeFlow, describeEachMode, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { createTestRedisPrefix } from './helpers/databases.ts';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts';
import { spawnGatehouse, stopProcess } from './helpers/process.ts';
import { fakeRoomService, signWebhook, webhookEvent, type FakeRoomService } from './helpers/livekit.ts';

const KEY = 'APIrejointest';
const SECRET = 'rejoin-secret-'.padEnd(40, 'r');
const PASSWORD = 'a long enough passphrase';

describeEachMode('LiveKit: no way back into a room after revocation', (mode) => {
  let gh: TestGatehouse;
  let lk: FakeRoomService;
  let proxy: TcpProxy | undefined;
  let redis: { url: string; prefix: string } | undefined;
  let web: { client_id: string; client_secret: string };
  let n = 0;
  let sids = 0;

  /** A user signed in at the web client, with a room token from connection-details for `suffix`. */
  async function userInRoom(suffix: string, who?: { email: string; id: string }) {
    const email = who?.email ?? `rejoin${++n}@example.com`;
    const id = who?.id ?? (await gh.cli('user', 'create', '--email', email, '--password', PASSWORD, '--role', 'user')).id as string;
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: { email, password: PASSWORD }, scope: 'openid offline_access' });
    const room = `user_${id}_${suffix}`;
    const res = await fetch(`${gh.url}/livekit/connection-details`, {
      method: 'POST', headers: { authorization: `Bearer ${tokens.access_token}`, 'content-type': 'application/json' }, body: JSON.stringify({ room_name: room }),
    });
    const body = await res.json();
    expect(res.status, JSON.stringify(body)).toBe(200);
    const claims = decodeJwt(body.participantToken) as { sub: string; attributes: Record<string, string> };
    return { id, email, room, identity: claims.sub, attributes: claims.attributes, refresh: tokens.refresh_token! };
  }

  /** LiveKit reports a participant (participant_joined or track_published); returns the webhook's status. */
  async function report(event: 'participant_joined' | 'track_published', room: string, p: { sid?: string; identity: string; attributes?: Record<string, string>; kind?: string }, to = gh.url) {
    const sid = p.sid ?? `PA_${++sids}`;
    const body = webhookEvent(event, {
      room: { name: room, sid: `RM_${room}` },
      participant: { sid, identity: p.identity, joinedAt: String(Math.floor(Date.now() / 1000)), attributes: p.attributes ?? {}, kind: p.kind ?? 'STANDARD' },
      ...(event === 'track_published' ? { track: { sid: `TR_${sid}`, type: 'AUDIO' } } : {}),
    });
    const res = await fetch(`${to}/livekit/webhook`, { method: 'POST', headers: { 'content-type': 'application/webhook+json', authorization: await signWebhook(body, KEY, SECRET) }, body });
    return { status: res.status, sid };
  }
  const removalsOf = (identity: string) => lk.calls.filter((c) => c.identity === identity);
  const session = async (sid: string) => (await gh.deps.db.query<{ removed_at: Date | null; removal_reason: string | null }>(
    'SELECT removed_at, removal_reason FROM room_sessions WHERE participant_sid = $1', [sid])).rows[0];
  const removalAudits = async (identity: string) => (await gh.deps.db.query<{ outcome: string; details: Record<string, unknown> }>(
    "SELECT outcome, details FROM audit_events WHERE type = 'livekit.participant.remove' AND details->>'identity' = $1 ORDER BY id", [identity])).rows;
  /** Polls until `done` holds (at most 5 s); the assertion after it says what was expected. */
  const until = async (done: () => Promise<boolean>) => {
    for (let i = 0; i < 200 && !(await done()); i++) await new Promise((r) => setTimeout(r, 25));
  };

  beforeAll(async () => {
    lk = await fakeRoomService(KEY, SECRET);
    const env = { LIVEKIT_URL: lk.url, LIVEKIT_API_KEY: KEY, LIVEKIT_API_SECRET: SECRET, LIVEKIT_GATEHOUSE_ONLY: '*_locked' };
    if (mode === 'postgres') {
      // Redis behind a proxy this suite can cut (the shared Redis keeps running for everyone else).
      const r = await createTestRedisPrefix();
      const url = new URL(r.url);
      proxy = await startTcpProxy(url.hostname, Number(url.port || 6379));
      redis = { url: r.url, prefix: r.prefix };
      const started = await startTestGatehouse({ mode, env, redis: { url: proxy.url(r.url), prefix: r.prefix } });
      gh = { ...started, close: async () => { await started.close(); await r.cleanup(); } };
    } else {
      gh = await startTestGatehouse({ mode, env });
    }
    const c = await gh.cli('client', 'create', '--name', 'Rooms', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token', '--first-party');
    web = { client_id: c.client_id, client_secret: c.client_secret };
    await gh.cli('policy', 'client', 'set', web.client_id, '--livekit');
  }, 90_000);
  afterAll(async () => {
    await gh?.close();
    await proxy?.close();
    await lk?.close();
  });

  it('a valid user is not removed, on join or on a published track, in an open or a Gatehouse-only room', async () => {
    for (const suffix of ['call', 'team_locked']) {
      const u = await userInRoom(suffix);
      expect((await report('participant_joined', u.room, u)).status).toBe(200);
      expect((await report('track_published', u.room, u)).status).toBe(200);
      expect(removalsOf(u.identity)).toEqual([]);
      expect(await removalAudits(u.identity)).toEqual([]);
    }
  });

  it('a revoked user who rejoins is removed again each time, and may stay once signed in again', async () => {
    const u = await userInRoom('standup');
    const first = await report('participant_joined', u.room, u);
    expect(removalsOf(u.identity)).toEqual([]);
    await gh.cli('revoke', '--user', u.id);
    const revokedAt = Math.floor(Date.now() / 1000);
    // The revocation takes the live participant out (src/livekit/rooms.ts).
    await until(async () => Boolean((await session(first.sid))?.removed_at));
    expect(removalsOf(u.identity)).toEqual([{ room: u.room, identity: u.identity }]);

    // LiveKit lets them back in with the same (renewed) token: removed on every rejoin and track.
    const rounds = ['participant_joined', 'track_published', 'participant_joined', 'participant_joined'] as const;
    const rejoins: string[] = [];
    for (const [i, event] of rounds.entries()) {
      const { status, sid } = await report(event, u.room, u);
      expect(status).toBe(200);
      expect(removalsOf(u.identity)).toHaveLength(i + 2);
      rejoins.push(sid);
    }
    expect(removalsOf(u.identity).every((c) => c.room === u.room)).toBe(true);
    for (const sid of [first.sid, ...rejoins]) expect(await session(sid)).toMatchObject({ removed_at: expect.any(Date), removal_reason: 'revoked_user' });
    const audits = (await removalAudits(u.identity)).filter((a) => a.details.trigger);
    expect(audits.map((a) => [a.outcome, a.details.trigger, a.details.reason, a.details.room])).toEqual(
      rounds.map((event) => ['success', event, 'revoked_user', u.room]));

    // Signed in again after the revocation: a new room token, and they stay. (A token issued in the
    // second of the revocation is revoked too, so the sign-in waits for the next second.)
    while (Math.floor(Date.now() / 1000) <= revokedAt) await new Promise((r) => setTimeout(r, 50));
    const again = await userInRoom('standup', u);
    const before = removalsOf(u.identity).length;
    expect((await report('participant_joined', again.room, again)).status).toBe(200);
    expect(removalsOf(u.identity)).toHaveLength(before);
    // …while the old token's participant is still taken out.
    await report('participant_joined', u.room, u);
    expect(removalsOf(u.identity)).toHaveLength(before + 1);
  });

  it("a rejoin on a revoked grant (RFC 7009, the refresh token) is removed, naming the grant", async () => {
    const u = await userInRoom('grant');
    const revoke = await fetch(`${gh.url}/token/revocation`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: u.refresh }),
    });
    expect(revoke.status).toBe(200);
    for (let round = 1; round <= 3; round++) {
      const { sid } = await report('participant_joined', u.room, u);
      expect(removalsOf(u.identity)).toHaveLength(round);
      expect(await session(sid)).toMatchObject({ removal_reason: 'revoked_grant' });
    }
  });

  it('a rejoin on a revoked session (gatehouse revoke --session) is removed, naming the session', async () => {
    const u = await userInRoom('session');
    const sessions = await gh.deps.db.query<{ uid: string }>("SELECT uid FROM oidc_payloads WHERE model = 'Session' AND payload->>'accountId' = $1", [u.id]);
    expect(sessions.rows).toHaveLength(1);
    await gh.cli('revoke', '--session', sessions.rows[0].uid);
    for (let round = 1; round <= 2; round++) {
      const { sid } = await report(round === 1 ? 'participant_joined' : 'track_published', u.room, u);
      expect(removalsOf(u.identity)).toHaveLength(round);
      expect(await session(sid)).toMatchObject({ removal_reason: 'revoked_session' });
    }
  });

  it('in a Gatehouse-only room removes participants Gatehouse did not issue; LiveKit agents and open rooms are left alone', async () => {
    const owner = await userInRoom('support_locked');
    // A token some other holder of the API key minted: unknown identity, no Gatehouse record.
    const stranger = await report('participant_joined', owner.room, { identity: 'someone_else' });
    expect(removalsOf('someone_else')).toEqual([{ room: owner.room, identity: 'someone_else' }]);
    expect(await session(stranger.sid)).toMatchObject({ removal_reason: 'not_issued' });
    // Copying a Gatehouse participant's (public) attribute into another identity does not help.
    await report('track_published', owner.room, { identity: 'copycat', attributes: owner.attributes });
    expect(removalsOf('copycat')).toHaveLength(1);
    // Nor does taking the token to another Gatehouse-only room.
    await report('participant_joined', `user_${owner.id}_other_locked`, owner);
    expect(removalsOf(owner.identity)).toEqual([{ room: `user_${owner.id}_other_locked`, identity: owner.identity }]);
    // LiveKit's own agent (dispatched with a token LiveKit mints) stays.
    await report('participant_joined', owner.room, { identity: 'agent-AJ_1', kind: 'AGENT' });
    expect(removalsOf('agent-AJ_1')).toEqual([]);
    // Outside Gatehouse-only rooms, other minters' participants are not Gatehouse's business.
    await report('participant_joined', `user_${owner.id}_open`, { identity: 'someone_else' });
    expect(removalsOf('someone_else')).toHaveLength(1);
    expect(removalsOf(owner.identity)).toHaveLength(1);
    expect((await removalAudits('someone_else')).map((a) => a.details)).toEqual([
      { room: owner.room, identity: 'someone_else', trigger: 'participant_joined', reason: 'not_issued', attempts: 1 },
    ]);
  });

  if (mode === 'postgres') {
    it('a rejoin reported to another Gatehouse process (same PostgreSQL and Redis) is removed there', async () => {
      const b = await spawnGatehouse({
        DATABASE_URL: gh.deps.config.DATABASE_URL!, REDIS_URL: redis!.url, REDIS_KEY_PREFIX: redis!.prefix,
        LIVEKIT_URL: lk.url, LIVEKIT_API_KEY: KEY, LIVEKIT_API_SECRET: SECRET, LIVEKIT_GATEHOUSE_ONLY: '*_locked',
      });
      try {
        // Minted by this process, reported to the other: its record and the revocation are shared.
        const u = await userInRoom('two_nodes');
        expect((await report('participant_joined', u.room, u, b.url)).status).toBe(200);
        expect(removalsOf(u.identity)).toEqual([]);
        await gh.cli('revoke', '--user', u.id);
        await until(async () => removalsOf(u.identity).length > 0);
        const { sid } = await report('participant_joined', u.room, u, b.url);
        expect(removalsOf(u.identity)).toHaveLength(2);
        expect(await session(sid)).toMatchObject({ removal_reason: 'revoked_user' });
      } finally {
        await stopProcess(b.proc);
      }
    }, 120_000);

    it('fails closed while Redis is unreachable: the participant is removed, and the audit says why', async () => {
      const u = await userInRoom('outage');
      proxy!.cut('refuse');
      try {
        const { status, sid } = await report('participant_joined', u.room, u);
        expect(status).toBe(200);
        expect(removalsOf(u.identity)).toEqual([{ room: u.room, identity: u.identity }]);
        expect(await session(sid)).toMatchObject({ removal_reason: 'revocation_unavailable' });
      } finally {
        proxy!.restore();
      }
      expect((await removalAudits(u.identity)).map((a) => a.details.reason)).toEqual(['revocation_unavailable']);
    });
  }
});
