// The load generator: one autocannon run described by a JSON spec (argv[2]), in its own process so it
// never shares an event loop (or, with taskset, a core) with the server it measures. Prints one JSON
// line: req/s, latency p50/p99, count of answers with an unexpected status, and errors.
//
// Spec kinds:
//   static  — the same request every time (client credentials, exchanges, introspection, ...)
//   refresh — each connection walks its own refresh-token chain (rotation spends each token once)
//   code    — GET /auth with a signed-in session → 303 with a code, then POST /token redeems it
//   login   — GET /auth without a session → 303 to the sign-in page, then POST the email and password
//             there (303 onwards): one password sign-in, argon2 verification included
import autocannon from 'autocannon';

export interface LoadSpec {
  kind: 'static' | 'refresh' | 'code' | 'login';
  url: string;
  connections: number;
  duration: number;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** refresh: one token per connection, and the client's Basic header. */
  refreshTokens?: string[];
  /** code: the authorization URL (path + query), session cookie and the PKCE verifier. */
  authPath?: string;
  cookie?: string;
  verifier?: string;
  redirectUri?: string;
  /** login: the form (email, password, _csrf) and the CSRF cookie it was issued with; authPath as for code. */
  form?: Record<string, string>;
  /**
   * static only: an open loop at this many requests a second, spaced evenly (runPaced), instead of
   * as fast as answers come back. autocannon's own rate sends each second's requests in one burst.
   */
  rate?: number;
}

export interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  /** Answers whose status was not the expected one, plus socket errors and timeouts. */
  bad: number;
  statuses: Record<string, number>;
}

const form = 'application/x-www-form-urlencoded';
let reported = 0;

function requestsFor(spec: LoadSpec): autocannon.Request[] | undefined {
  if (spec.kind === 'refresh') {
    // autocannon clears a connection's context after each pass over `requests`, so the chains live
    // here: a request takes a token, its answer puts the successor back. Each request in flight holds
    // one token, so N connections and N tokens never present a token twice.
    const pool = [...spec.refreshTokens!];
    return [{
      method: 'POST',
      path: '/token',
      headers: { ...spec.headers, 'content-type': form },
      setupRequest: (req) => ({ ...req, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: pool.shift() ?? 'none' }).toString() }),
      onResponse: (status, body) => {
        if (status === 200) pool.push(JSON.parse(body).refresh_token);
        else if (!reported++) process.stderr.write(`refresh: ${status} ${body}\n`);
      },
    }];
  }
  if (spec.kind === 'code') {
    return [
      { method: 'GET', path: spec.authPath!, headers: { cookie: spec.cookie! },
        onResponse: (_status, _body, ctx: any, headers: any) => {
          const loc = headers?.location ?? headers?.Location;
          ctx.code = loc ? new URL(loc, spec.url).searchParams.get('code') : undefined;
        } },
      { method: 'POST', path: '/token', headers: { ...spec.headers, 'content-type': form },
        setupRequest: (req, ctx: any) => ({ ...req, body: new URLSearchParams({ grant_type: 'authorization_code', code: ctx.code ?? 'none', redirect_uri: spec.redirectUri!, code_verifier: spec.verifier! }).toString() }) },
    ];
  }
  if (spec.kind === 'login') {
    return [
      { method: 'GET', path: spec.authPath!,
        onResponse: (_status, _body, ctx: any, headers: any) => {
          // The interaction's cookies (oidc-provider's, bound to its uid) go with the form post.
          const h = lower(headers);
          ctx.uidPath = h.location ? new URL(h.location, spec.url).pathname : '/interaction/none';
          ctx.cookie = [spec.cookie!, ...[h['set-cookie'] ?? []].flat().map((c: string) => c.split(';')[0])].join('; ');
        } },
      { method: 'POST', path: '/interaction/none/login', headers: { 'content-type': form },
        setupRequest: (req, ctx: any) => ({ ...req, path: `${ctx.uidPath}/login`, headers: { ...req.headers, cookie: ctx.cookie }, body: new URLSearchParams(spec.form).toString() }) },
    ];
  }
  return undefined;
}

const lower = (headers: Record<string, unknown> | undefined) => Object.fromEntries(Object.entries(headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])) as Record<string, any>;

/**
 * An open loop: request i is due at start + i/rate, sent then over a keep-alive pool of
 * `connections` sockets (queued when all are busy), and its latency counts from when it was due, so
 * a server that falls behind shows it in the latency instead of slowing the load down.
 */
async function runPaced(spec: LoadSpec): Promise<LoadResult> {
  const http = await import('node:http');
  const agent = new http.Agent({ keepAlive: true, maxSockets: spec.connections });
  const target = new URL(spec.url);
  const body = Buffer.from(spec.body ?? '');
  const headers = { ...spec.headers, 'content-length': String(body.length) };
  const rate = spec.rate!;
  const total = Math.round(rate * spec.duration);
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  let errors = 0;
  let sent = 0;
  let finished = 0;
  const start = performance.now();
  const send = (due: number) => {
    // Each request counts once: an answer, or an error (before the answer or cut off in its body).
    let settled = false;
    const fail = () => {
      if (settled) return;
      settled = true;
      errors++;
      finished++;
    };
    const req = http.request({ agent, host: target.hostname, port: target.port, path: target.pathname + target.search, method: spec.method ?? 'POST', headers, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('error', fail);
      res.on('end', () => {
        if (settled) return;
        settled = true;
        latencies.push(performance.now() - due);
        statuses[res.statusCode!] = (statuses[res.statusCode!] ?? 0) + 1;
        finished++;
      });
    });
    req.on('error', fail);
    req.on('close', () => { if (!settled) fail(); });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(body);
  };
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const dueNow = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
      for (; sent < dueNow; sent++) send(start + (sent / rate) * 1000);
      if (sent >= total) {
        clearInterval(tick);
        const wait = setInterval(() => {
          if (finished >= total) { clearInterval(wait); resolve(); }
        }, 5);
      }
    }, 1);
  });
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const pct = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  const elapsed = (performance.now() - start) / 1000;
  const bad = Object.entries(statuses).filter(([c]) => c !== '200').reduce((n, [, v]) => n + v, 0) + errors;
  return { rps: latencies.length / elapsed, p50: pct(0.5), p99: pct(0.99), requests: latencies.length, bad: bad + (latencies.length ? 0 : 1), statuses };
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  if (spec.rate) {
    if (spec.kind !== 'static') throw new Error('a fixed rate is for static specs');
    return runPaced(spec);
  }
  const r = await autocannon({
    url: spec.url,
    connections: spec.connections,
    duration: spec.duration,
    method: (spec.method ?? 'POST') as 'POST',
    headers: spec.headers,
    body: spec.body,
    requests: requestsFor(spec),
    timeout: 10,
  });
  const statuses: Record<string, number> = {};
  for (const [code, s] of Object.entries(r.statusCodeStats ?? {})) statuses[code] = (s as { count: number }).count;
  // The code flow's first request answers 303 by design, and both of a sign-in's; everything else must be 200.
  const ok = new Set(spec.kind === 'code' ? ['200', '303'] : spec.kind === 'login' ? ['303'] : ['200']);
  const bad = Object.entries(statuses).filter(([c]) => !ok.has(c)).reduce((n, [, v]) => n + v, 0) + r.errors + r.timeouts;
  // A run in which nothing came back measured nothing: count it as one bad answer, not as 0 req/s.
  const none = r.requests.total === 0 ? 1 : 0;
  // A code-flow (or sign-in) iteration is two requests; count iterations so the rate is "codes
  // redeemed (sign-ins) per second".
  const per = spec.kind === 'code' || spec.kind === 'login' ? 2 : 1;
  return { rps: r.requests.average / per, p50: r.latency.p50, p99: r.latency.p99, requests: r.requests.total / per, bad: bad + none, statuses };
}

// `--serve`: one spec per stdin line, one result per stdout line, until stdin ends.
if (process.argv[1]?.endsWith('load.ts') && process.argv[2] === '--serve') {
  const { createInterface } = await import('node:readline');
  for await (const line of createInterface({ input: process.stdin })) {
    try {
      process.stdout.write(`${JSON.stringify(await runLoad(JSON.parse(line) as LoadSpec))}\n`);
    } catch (err) {
      process.stderr.write(`${(err as Error)?.stack ?? err}\n`);
      process.exit(1);
    }
  }
}
