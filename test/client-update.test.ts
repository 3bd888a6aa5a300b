// `client update` and PATCH /admin/api/clients/{id} (issue 18): a client changes in place — a new
// redirect URI works at the authorization endpoint at once, grants and names change, other settings
// stay — and an update is held to the rules of creation, with errors that say what to do.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { servicesFor } from './helpers/databases.ts';

const A = 'http://127.0.0.1:8976/a';
const B = 'http://127.0.0.1:8976/b';

describe.each<Mode>(['embedded', 'postgres'])('client update (%s)', (mode) => {
  let gh: TestGatehouse;
  let token: string;
  const ready = mode === 'embedded' || servicesFor('postgres+redis');

  /** Where /auth sends a browser for this redirect URI: the login page, or an error page. */
  const authorize = async (clientId: string, redirectUri: string) => {
    const q = new URLSearchParams({ client_id: clientId, redirect_uri: redirectUri, response_type: 'code', scope: 'openid', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', state: 's' });
    const res = await fetch(`${gh.url}/auth?${q}`, { redirect: 'manual' });
    return { status: res.status, location: res.headers.get('location') ?? '', text: res.status >= 400 ? await res.text() : '' };
  };
  const patch = async (id: string, body: unknown) => {
    const res = await fetch(`${gh.url}/admin/api/clients/${encodeURIComponent(id)}`, {
      method: 'PATCH', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() as Record<string, any> };
  };

  beforeAll(async () => {
    if (!(await ready)) return;
    gh = await startTestGatehouse({ mode });
    const robot = await gh.cli('client', 'create', '--name', 'robot', '--grant', 'client_credentials');
    await gh.cli('client', 'admin-api', robot.client_id, '--full');
    const res = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${robot.client_id}:${robot.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: `${gh.url}/admin/api`, scope: 'gatehouse:admin' }),
    });
    token = ((await res.json()) as { access_token: string }).access_token;
  });
  afterAll(async () => {
    await gh?.close();
  });

  it('adds a redirect URI that works at once, renames, and keeps what it was not told to change', async () => {
    if (!(await ready)) return;
    const web = await gh.cli('client', 'create', '--name', 'web', '--redirect-uri', A);
    await gh.cli('client', 'require-mfa', web.client_id);
    expect((await authorize(web.client_id, B)).status).toBe(400);

    const updated = await gh.cli('client', 'update', web.client_id, '--add-redirect-uri', B, '--name', 'Web app');
    expect(updated).toMatchObject({ client_id: web.client_id, name: 'Web app', type: 'confidential' });
    expect(updated.metadata).toMatchObject({ redirect_uris: [A, B], require_mfa: true, token_endpoint_auth_method: 'client_secret_basic' });
    const now = await authorize(web.client_id, B);
    expect(now.status).toBe(303);
    expect(now.location).toMatch(/\/interaction\//);

    // Removing A makes A fail; the secret still authenticates (it was not touched).
    await gh.cli('client', 'update', web.client_id, '--remove-redirect-uri', A, '--add-grant', 'client_credentials');
    expect((await authorize(web.client_id, A)).status).toBe(400);
    const cc = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials' }),
    });
    expect(cc.status).toBe(200);

    const audit = await gh.deps.db.query<{ details: { changed: string[] } }>(`SELECT details FROM audit_events WHERE type = 'admin.client.update' AND subject = $1 ORDER BY id`, [web.client_id]);
    expect(audit.rows.map((r) => r.details.changed)).toEqual([['name', 'redirectUris'], ['redirectUris', 'grantTypes']]);
  });

  it('refuses what creation refuses, and says what to do', async () => {
    if (!(await ready)) return;
    const spa = await gh.cli('client', 'create', '--name', 'spa', '--type', 'public', '--redirect-uri', A);
    await expect(gh.cli('client', 'update', spa.client_id, '--add-grant', 'client_credentials')).rejects.toThrow(/public clients cannot use client_credentials/);
    await expect(gh.cli('client', 'update', spa.client_id, '--clear-redirect-uris')).rejects.toThrow(/need at least one redirect URI/);
    await expect(gh.cli('client', 'update', spa.client_id)).rejects.toThrow(/nothing to change/);
    await expect(gh.cli('client', 'update', 'gh_nope')).rejects.toThrow(/no client gh_nope \(gatehouse client list/);
    // Nothing changed by the refusals.
    expect((await gh.cli('client', 'list')).find((c: any) => c.client_id === spa.client_id).metadata.grant_types).toEqual(['authorization_code', 'refresh_token']);
  });

  it('PATCH /admin/api/clients/{id} does the same, with 400, 404 and 409 for the refusals', async () => {
    if (!(await ready)) return;
    const web = await gh.cli('client', 'create', '--name', 'web2', '--redirect-uri', A, '--scope', 'openid profile');
    const ok = await patch(web.client_id, { redirect_uris: [B], name: 'Web 2', scope: null, first_party: true });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ client_id: web.client_id, name: 'Web 2', first_party: true });
    expect(ok.body.metadata.redirect_uris).toEqual([B]);
    expect(ok.body.metadata.scope).toBeUndefined();
    expect((await patch(web.client_id, { grant_types: ['implicit'] })).status).toBe(400);
    expect((await patch(web.client_id, { client_secret: 'x' })).status).toBe(400);
    expect((await patch('gh_nope', { name: 'x' })).status).toBe(404);

    // A self-registered client changes through RFC 7592, not here.
    const reg = await fetch(`${gh.url}/reg`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: [A], token_endpoint_auth_method: 'none', client_name: 'host' }) });
    const registered = (await reg.json()) as { client_id: string };
    const refused = await patch(registered.client_id, { grant_types: ['client_credentials'] });
    expect(refused.status).toBe(409);
    expect(refused.body.error_description).toMatch(/RFC 7592/);
  });
});
