// `npx tsx bench/rejoin.ts [--mode embedded|postgres]`: how fast a revoked user who rejoins a LiveKit
// room is taken out again. A LiveKit stand-in (test/helpers/livekit.ts) receives RemoveParticipant;
// the time measured is from sending the signed participant_joined webhook to the stand-in receiving
// the removal for that join, one rejoin at a time (BENCH_REJOINS, default 200), after the user's
// revocation. Also: a valid user's join (check only, nothing removed), for the webhook's own cost.
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import { TokenVerifier } from 'livekit-server-sdk';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse } from '../test/helpers/gatehouse.ts';
import { signWebhook, webhookEvent } from '../test/helpers/livekit.ts';

const argv = process.argv.slice(2);
const MODES = (argv.includes('--mode') ? [argv[argv.indexOf('--mode') + 1]] : ['embedded', 'postgres']) as ('embedded' | 'postgres')[];
const N = Number(process.env.BENCH_REJOINS ?? 200);
const KEY = 'APIbenchrejoin';
const SECRET = 'bench-rejoin-secret-'.padEnd(40, 'b');
const PASSWORD = 'a long benchmark passphrase';
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];

/** RemoveParticipant stand-in that resolves a waiter per identity+sid order. */
async function roomService() {
  const waiting: (() => void)[] = [];
  const verifier = new TokenVerifier(KEY, SECRET);
  const server = http.createServer(async (req, res) => {
    for await (const _ of req);
    await verifier.verify((req.headers.authorization ?? '').replace(/^Bearer /, ''));
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    waiting.shift()?.();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    next: () => new Promise<void>((r) => waiting.push(r)),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

for (const mode of MODES) {
  const lk = await roomService();
  // Rate limits off: the bench measures the check and the removal, not a limiter saying no.
  const gh = await startTestGatehouse({ mode, env: { LIVEKIT_URL: lk.url, LIVEKIT_API_KEY: KEY, LIVEKIT_API_SECRET: SECRET, RATE_LIMITS: 'off' } });
  try {
    const c = await gh.cli('client', 'create', '--name', 'bench', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--first-party');
    await gh.cli('policy', 'client', 'set', c.client_id, '--livekit');
    const signIn = async (email: string) => {
      const id = (await gh.cli('user', 'create', '--email', email, '--password', PASSWORD, '--role', 'user')).id as string;
      const { tokens } = await codeFlow(gh, await rpConfig(gh, c.client_id, c.client_secret), { creds: { email, password: PASSWORD }, scope: 'openid' });
      const res = await fetch(`${gh.url}/livekit/connection-details`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token}`, 'content-type': 'application/json' }, body: JSON.stringify({ room_name: `user_${id}_bench` }) });
      const claims = decodeJwt((await res.json()).participantToken) as { sub: string; attributes: Record<string, string>; video: { room: string } };
      return { id, identity: claims.sub, attributes: claims.attributes, room: claims.video.room };
    };
    const join = async (u: { identity: string; attributes: Record<string, string>; room: string }) => {
      const body = webhookEvent('participant_joined', { room: { name: u.room, sid: 'RM_b' }, participant: { sid: `PA_${crypto.randomUUID()}`, identity: u.identity, attributes: u.attributes } });
      const res = await fetch(`${gh.url}/livekit/webhook`, { method: 'POST', headers: { 'content-type': 'application/webhook+json', authorization: await signWebhook(body, KEY, SECRET) }, body });
      if (res.status !== 200) throw new Error(`webhook answered ${res.status}`);
    };
    const valid = await signIn('valid@example.com');
    const revoked = await signIn('revoked@example.com');
    await gh.cli('revoke', '--user', revoked.id);

    const removal: number[] = [];
    const check: number[] = [];
    for (let i = 0; i < N; i++) {
      const removed = lk.next();
      const t0 = performance.now();
      await join(revoked);
      await removed;
      removal.push(performance.now() - t0);
      const t1 = performance.now();
      await join(valid);
      check.push(performance.now() - t1);
    }
    const row = (name: string, xs: number[]) => `| ${mode} | ${name} | ${xs.length} | ${pct(xs, 0.5).toFixed(1)} | ${pct(xs, 0.95).toFixed(1)} | ${Math.max(...xs).toFixed(1)} |`;
    console.log('| mode | what | n | median ms | p95 ms | max ms |\n|---|---|---|---|---|---|');
    console.log(row('revoked user rejoins → RemoveParticipant received', removal));
    console.log(row('valid user joins → webhook answered (nothing removed)', check));
  } finally {
    await gh.close();
    await lk.close();
  }
}
