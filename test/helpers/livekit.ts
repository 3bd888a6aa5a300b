// A LiveKit stand-in for tests: LiveKit's webhook signing (as the SDK's WebhookReceiver checks it)
// and its RoomService over Twirp (as the SDK's RoomServiceClient calls it, JWT verified).
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AccessToken, TokenVerifier } from 'livekit-server-sdk';

/** LiveKit's signing: a JWT (iss = API key) whose sha256 claim is base64(SHA-256(body)). */
export async function signWebhook(body: string, key: string, secret: string) {
  const at = new AccessToken(key, secret);
  at.sha256 = crypto.createHash('sha256').update(body).digest('base64');
  return at.toJwt();
}

/** A webhook body as LiveKit sends it (protobuf JSON, epoch seconds as strings). */
export const webhookEvent = (name: string, extra: Record<string, unknown>) => JSON.stringify({
  event: name, id: crypto.randomUUID(), createdAt: String(Math.floor(Date.now() / 1000)), ...extra,
});

/** Stand-in for LiveKit's RoomService: records verified RemoveParticipant calls; can be made to fail or to hang. */
export async function fakeRoomService(key: string, secret: string) {
  const calls: { room: string; identity: string }[] = [];
  let failing = false;
  let attempts = 0;
  let held: Promise<void> | undefined;
  let release = () => {};
  const verifier = new TokenVerifier(key, secret);
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
    if (held) await held;
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
    /** Every request is held unanswered until release(). */
    hold() { held = new Promise((r) => { release = () => { held = undefined; r(); }; }); },
    release: () => release(),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
export type FakeRoomService = Awaited<ReturnType<typeof fakeRoomService>>;
