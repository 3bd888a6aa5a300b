// Revocation under Redis flushes (issue 20, item 5): wipe one Gatehouse's Redis keys again and
// again — in the middle of its reloads too — while revoked tokens are presented in parallel, and
// record every answer. Only the test's own key prefix is wiped (the Redis may be shared), in one Lua
// script, so each wipe is atomic like FLUSHDB or an empty restart: a SCAN+DEL from the client would
// delete keys one batch at a time, which no real outage does.
import { Redis } from 'ioredis';

// SCAN in a script is allowed on Redis 7 (effects replication); keys are named by pattern, not KEYS[],
// which a standalone Redis accepts.
const WIPE_PREFIX = `local gen = redis.call('EXISTS', ARGV[2])
local marker = redis.call('EXISTS', ARGV[3])
local cursor = '0'
local n = 0
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do redis.call('DEL', k) n = n + 1 end
until cursor == '0'
return {n, gen, marker}`;

/** Delete every key under `prefix` at once. midReload: a reload had begun and not finished. */
export async function wipePrefix(redis: Redis, prefix: string): Promise<{ deleted: number; midReload: boolean }> {
  const glob = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  const [deleted, generation, marker] = (await redis.eval(WIPE_PREFIX, 0, glob, `${prefix}revoked:generation`, `${prefix}revoked:loaded`)) as number[];
  return { deleted, midReload: generation === 1 && marker === 0 };
}

export interface Answer {
  status: number;
  body: Record<string, any>;
}

/** One way of presenting a revoked token (introspection, userinfo, exchange) at one node. */
export interface Probe {
  name: string;
  send(): Promise<Answer>;
  /** The token was taken as valid: must never happen. */
  accepted(a: Answer): boolean;
  /** The normal refusal of a revoked token (not "cannot tell right now"). */
  refused(a: Answer): boolean;
}

export interface FlushRun {
  wipes: number;
  midReload: number;
  requests: number;
  /** probe name → status → count */
  statuses: Record<string, Record<number, number>>;
  accepted: string[];
  /** neither accepted, refused nor 503 temporarily_unavailable */
  unexpected: string[];
  /** from the last wipe until every probe gave its normal refusal at once; -1 when they never did */
  settleMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const unavailable = (a: Answer) => a.status === 503 && a.body.error === 'temporarily_unavailable';

/**
 * `wipes` wipes with gaps from `gaps` (cycled; short ones land inside reloads, long ones after them),
 * while `workers` loops send the probes round-robin; then keep probing until every probe refuses
 * normally (or `settleWithinMs` passes).
 */
export async function flushWhileProbing(opts: {
  redisUrl: string;
  prefix: string;
  probes: Probe[];
  wipes: number;
  gaps: number[];
  workers: number;
  settleWithinMs: number;
}): Promise<FlushRun> {
  const redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: 1 });
  const run: FlushRun = { wipes: 0, midReload: 0, requests: 0, statuses: {}, accepted: [], unexpected: [], settleMs: -1 };
  const record = (p: Probe, a: Answer) => {
    run.requests++;
    const byStatus = (run.statuses[p.name] ??= {});
    byStatus[a.status] = (byStatus[a.status] ?? 0) + 1;
    const seen = `${p.name}: ${a.status} ${JSON.stringify(a.body)}`;
    if (p.accepted(a)) run.accepted.push(seen);
    else if (!p.refused(a) && !unavailable(a)) run.unexpected.push(seen);
  };
  let wiping = true;
  const workers = Array.from({ length: opts.workers }, async (_, w) => {
    for (let i = w; wiping; i++) {
      const p = opts.probes[i % opts.probes.length];
      record(p, await p.send());
    }
  });
  try {
    for (let i = 0; i < opts.wipes; i++) {
      if (i > 0) await sleep(opts.gaps[i % opts.gaps.length]);
      const r = await wipePrefix(redis, opts.prefix);
      run.wipes++;
      if (r.midReload) run.midReload++;
    }
    const last = performance.now();
    while (performance.now() - last < opts.settleWithinMs) {
      const answers = await Promise.all(opts.probes.map(async (p) => {
        const a = await p.send();
        record(p, a);
        return p.refused(a);
      }));
      if (answers.every(Boolean)) {
        run.settleMs = performance.now() - last;
        break;
      }
      await sleep(50);
    }
  } finally {
    wiping = false;
    await Promise.all(workers);
    redis.disconnect();
  }
  return run;
}
