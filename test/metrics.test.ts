// GET /metrics (Prometheus, prom-client): what a scraper sees after real traffic — request counts
// per route with ids folded into `:id`, audit events by type and outcome, the revocation store
// gauge, process metrics — and who may read it: loopback callers, or a bearer METRICS_TOKEN.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { routeLabel } from '../src/http/metrics.ts';

const METRICS_TOKEN = 'metrics-scraper-token-'.padEnd(40, 'x');

/** The value of one series in a Prometheus text exposition, or undefined when it is absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('route labels', () => {
  it('fold ids into :id and unknown paths into one series', () => {
    expect(routeLabel('/interaction/Ab9_xZ-qq1/login', 200)).toBe('/interaction/:id/login');
    expect(routeLabel('/reg/gh_mm2Q42alpaKHFbUL', 200)).toBe('/reg/:id');
    expect(routeLabel('/account/devices/489b6766-ff87-431e-bcb3-e09911769df0/revoke', 303)).toBe('/account/devices/:id/revoke');
    expect(routeLabel('/.well-known/openid-configuration', 200)).toBe('/.well-known/openid-configuration');
    expect(routeLabel('/token/introspection', 200)).toBe('/token/introspection');
    expect(routeLabel('/wp-admin/setup.php', 404)).toBe('unmatched');
  });
});

describe('GET /metrics', () => {
  let gh: TestGatehouse;
  let client: { client_id: string; client_secret: string };
  let issued: string;

  beforeAll(async () => {
    gh = await startTestGatehouse();
    await gh.cli('resource', 'create', '--uri', 'https://mcp.example.com/mcp', '--scope', 'tools:read');
    client = await gh.cli('client', 'create', '--name', 'agent', '--grant', 'client_credentials');
  });
  afterAll(async () => gh?.close());

  const token = (secret: string) => fetch(`${gh.url}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${client.client_id}:${secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: 'https://mcp.example.com/mcp', scope: 'tools:read' }),
  });

  it('counts requests per route and status, audit events per type and outcome, and reports the stores', async () => {
    const before = await (await fetch(`${gh.url}/metrics`)).text();
    const discoveryBefore = sample(before, 'gatehouse_http_requests_total{method="GET",route="/.well-known/openid-configuration",status="200"}') ?? 0;

    expect((await fetch(`${gh.url}/.well-known/openid-configuration`)).status).toBe(200);
    expect((await fetch(`${gh.url}/.well-known/openid-configuration`)).status).toBe(200);
    const ok = await token(client.client_secret);
    expect(ok.status).toBe(200);
    issued = (await ok.json()).access_token;
    expect((await token('not-the-secret')).status).toBe(401);
    expect((await fetch(`${gh.url}/interaction/NoSuchInteraction123`)).status).toBeGreaterThanOrEqual(400);

    const res = await fetch(`${gh.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const text = await res.text();
    expect(sample(text, 'gatehouse_http_requests_total{method="GET",route="/.well-known/openid-configuration",status="200"}')).toBe(discoveryBefore + 2);
    expect(sample(text, 'gatehouse_http_requests_total{method="POST",route="/token",status="200"}')).toBe(1);
    expect(sample(text, 'gatehouse_http_requests_total{method="POST",route="/token",status="401"}')).toBe(1);
    expect(text).toMatch(/^gatehouse_http_requests_total\{method="GET",route="\/interaction\/:id",status="\d+"\} 1$/m);
    expect(sample(text, 'gatehouse_http_request_duration_seconds_count{method="POST",route="/token"}')).toBe(2);
    expect(sample(text, 'gatehouse_audit_events_total{type="token.issue",outcome="success"}')).toBeGreaterThanOrEqual(1);
    // Admin actions through the CLI are audited, so counted too.
    expect(sample(text, 'gatehouse_audit_events_total{type="admin.client.create",outcome="success"}')).toBe(1);
    expect(sample(text, 'gatehouse_revocation_store_up')).toBe(1);
    expect(sample(text, 'gatehouse_info{mode="embedded",store="memory"}')).toBe(1);
    expect(text).toMatch(/^gatehouse_process_cpu_user_seconds_total \d/m);
    // No identifier or secret becomes a label.
    for (const secret of [client.client_id, client.client_secret, issued, 'NoSuchInteraction123']) expect(text).not.toContain(secret);
  });

  it('is refused to a caller that is not on loopback when no METRICS_TOKEN is set (403)', async () => {
    const proxied = await startTestGatehouse({ env: { TRUST_PROXY: 'true' } });
    try {
      const res = await fetch(`${proxied.url}/metrics`, { headers: { 'x-forwarded-for': '203.0.113.7' } });
      expect(res.status).toBe(403);
      expect(await res.json()).toMatchObject({ error: 'access_denied' });
      expect((await fetch(`${proxied.url}/metrics`)).status).toBe(200);
    } finally {
      await proxied.close();
    }
  });

  it('with METRICS_TOKEN, answers only the bearer of that token (401 otherwise)', async () => {
    const guarded = await startTestGatehouse({ env: { METRICS_TOKEN } });
    try {
      const none = await fetch(`${guarded.url}/metrics`);
      expect(none.status).toBe(401);
      expect(none.headers.get('www-authenticate')).toBe('Bearer realm="metrics"');
      expect(await none.json()).toMatchObject({ error: 'invalid_token' });
      expect((await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}x` } })).status).toBe(401);
      const ok = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain('gatehouse_http_requests_total');
    } finally {
      await guarded.close();
    }
  });
});
