// POST /livekit/webhook: LiveKit's webhooks, verified with the SDK's WebhookReceiver (the
// Authorization header is a JWT signed with our API secret whose `sha256` claim is the base64
// SHA-256 of the raw body). Records room sessions; anything unverified is 401 and records nothing.
// Each join and published track is checked (./rejoin.ts): a participant whose user, session or grant
// is revoked, or, in Gatehouse-only rooms, whose token Gatehouse never minted, is removed again.
import Router from '@koa/router';
import type { Context } from 'koa';
import type { WebhookReceiver } from 'livekit-server-sdk';
import { livekitSdk } from './sdk.ts';
import type { Config } from '../config/index.ts';
import type { Audit } from '../audit/index.ts';
import type { Logger } from '../http/log.ts';
import { HttpError, NotFound } from '../http/errors.ts';
import { readRawBody } from '../http/body.ts';
import { userIdOfIdentity, type RoomSessions } from './rooms.ts';
import type { RejoinGuard } from './rejoin.ts';

/** Webhook bodies are small JSON documents; 1 MiB is far beyond any LiveKit event. */
const WEBHOOK_LIMIT = 1024 * 1024;


/** LiveKit timestamps are epoch seconds (bigint in the SDK's protobuf types); fall back to now. */
function at(seconds: unknown): Date {
  const n = typeof seconds === 'bigint' ? Number(seconds) : Number(seconds);
  return Number.isFinite(n) && n > 0 ? new Date(n * 1000) : new Date();
}

export function createWebhookRouter(deps: { config: Config; rooms: RoomSessions; audit: Audit; log: Logger; rejoin?: RejoinGuard }): Router {
  const router = new Router({ prefix: '/livekit' });
  const { config } = deps;
  const { LIVEKIT_API_KEY: key, LIVEKIT_API_SECRET: secret } = config;
  let receiver: Promise<WebhookReceiver> | undefined;

  router.post('/webhook', async function receiveLivekitWebhook(ctx) {
    ctx.set('Cache-Control', 'no-store');
    if (!key || !secret) throw new NotFound('LiveKit is not configured on this server');
    receiver ??= livekitSdk().then((sdk) => new sdk.WebhookReceiver(key, secret));
    const raw = await readRawBody(ctx, WEBHOOK_LIMIT);
    let event;
    try {
      event = await (await receiver).receive(raw, ctx.get('authorization') || undefined);
    } catch (err) {
      deps.log.info({ err: (err as Error).message, requestId: ctx.state.requestId }, 'livekit webhook refused');
      throw new HttpError(401, 'invalid_token', 'webhook signature is missing or invalid');
    }
    const room = event.room;
    const p = event.participant;
    switch (event.event) {
      case 'participant_joined':
      // A published track also says who is in the room: the join's webhook may have been lost, and
      // a participant LiveKit let back in (it renews tokens itself) is caught on its next track too.
      case 'track_published':
        if (room?.name && p?.sid && p.identity) {
          // Whose participant: the room token's record says (a device identity user_<sub>_<device> too).
          const issued = await deps.rejoin?.identify(room.name, p);
          await deps.rooms.recordJoin({
            participantSid: p.sid, roomName: room.name, roomSid: room.sid || undefined, identity: p.identity,
            userId: issued ? issued.userId ?? null : userIdOfIdentity(config, p.identity), joinedAt: at(p.joinedAt || event.createdAt),
          });
          await deps.rejoin?.checkParticipant(event.event, room.name, p, issued);
        }
        break;
      case 'participant_left':
      case 'participant_connection_aborted':
        if (room?.name && p?.sid && p.identity) {
          const issued = await deps.rejoin?.identify(room.name, p);
          await deps.rooms.recordLeave({
            participantSid: p.sid, roomName: room.name, roomSid: room.sid || undefined, identity: p.identity,
            userId: issued ? issued.userId ?? null : userIdOfIdentity(config, p.identity), joinedAt: p.joinedAt ? at(p.joinedAt) : undefined, leftAt: at(event.createdAt),
          });
        }
        break;
      case 'room_finished':
        if (room?.name) await deps.rooms.finishRoom(room.name, room.sid || undefined, at(event.createdAt));
        break;
      default:
        break;
    }
    ctx.status = 200;
    ctx.body = { ok: true };
  });
  return router;
}
