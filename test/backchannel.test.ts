// OIDC Back-Channel Logout 1.0: a relying party with a back-channel logout URI gets a signed logout
// token for its session when the user logs out at Gatehouse (RP-initiated logout) and when Gatehouse
// ends the session itself (the user revoked). The RP here is a real HTTP endpoint; its tokens are
// verified with jose against Gatehouse's /jwks as an RP would.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import { CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const LEO = { email: 'leo@example.com', password: 'leo has a long password' };
const EVENT = 'http://schemas.openid.net/event/backchannel-logout';

describe('back-channel logout', () => {
  let gh: TestGatehouse;
  let rp: http.Server;
  let rpUrl: string;
  const received: string[] = [];
  let answer = 200;
  let app: { client_id: string; client_secret: string };

  beforeAll(async () => {
    rp = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        received.push(new URLSearchParams(body).get('logout_token') ?? '');
        res.writeHead(answer).end();
      });
    });
    await new Promise<void>((resolve) => rp.listen(0, '127.0.0.1', resolve));
    rpUrl = `http://127.0.0.1:${(rp.address() as AddressInfo).port}/backchannel-logout`;
    gh = await startTestGatehouse();
    await gh.cli('user', 'create', '--email', LEO.email, '--password', LEO.password);
    app = await gh.cli('client', 'create', '--name', 'notes', '--redirect-uri', CALLBACK, '--first-party', '--backchannel-logout-uri', rpUrl);
  });
  afterAll(async () => {
    await gh?.close();
    await new Promise<void>((resolve) => rp?.close(() => resolve()));
  });

  /** A logout token as the RP checks it (OIDC Back-Channel Logout §2.6). */
  async function verifyLogoutToken(token: string): Promise<JWTPayload> {
    const { payload, protectedHeader } = await jwtVerify(token, createRemoteJWKSet(new URL(`${gh.url}/jwks`)), { issuer: gh.url, audience: app.client_id, typ: 'logout+jwt' });
    expect(protectedHeader.typ).toBe('logout+jwt');
    expect(payload.events).toEqual({ [EVENT]: {} });
    expect(payload).not.toHaveProperty('nonce');
    expect(payload.jti).toEqual(expect.any(String));
    return payload;
  }
  const audits = async () => (await gh.deps.db.query<{ outcome: string; subject: string; client_id: string; details: Record<string, unknown> }>(
    "SELECT outcome, subject, client_id, details FROM audit_events WHERE type = 'backchannel.logout' ORDER BY id")).rows;

  it('is announced in discovery', async () => {
    const meta = await (await fetch(`${gh.url}/.well-known/openid-configuration`)).json();
    expect(meta).toMatchObject({ backchannel_logout_supported: true, backchannel_logout_session_supported: true });
  });

  it("sends the RP a logout token for its session when the user logs out at Gatehouse", async () => {
    const config = await rpConfig(gh, app.client_id, app.client_secret);
    const { tokens, browser } = await codeFlow(gh, config, { creds: LEO, scope: 'openid' });
    const { sid, sub } = tokens.claims()!;
    const start = await browser.follow(`${gh.url}/session/end?id_token_hint=${encodeURIComponent(tokens.id_token!)}`, gh.url);
    const { action, fields } = formOf(start.html!, '/session/end/confirm');
    await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, logout: 'yes' } });
    await expect.poll(() => received.length).toBe(1);
    expect(await verifyLogoutToken(received[0])).toMatchObject({ sub, sid });
    await expect.poll(audits).toEqual([{ outcome: 'success', subject: sub, client_id: app.client_id, details: { reason: 'logout' } }]);
  });

  it('sends one when Gatehouse ends the session itself (the user revoked), and a failing RP does not hold the revocation up', async () => {
    const config = await rpConfig(gh, app.client_id, app.client_secret);
    const first = await codeFlow(gh, config, { creds: LEO, scope: 'openid' });
    const { sid, sub } = first.tokens.claims()!;
    await gh.cli('revoke', '--user', LEO.email);
    await expect.poll(() => received.length).toBe(2);
    expect(await verifyLogoutToken(received[1])).toMatchObject({ sub, sid });
    await expect.poll(async () => (await audits()).at(-1)).toMatchObject({ outcome: 'success', details: { reason: 'admin' } });

    answer = 500;
    const second = await codeFlow(gh, config, { creds: LEO, scope: 'openid' });
    await gh.deps.accounts.setPassword(sub!, 'leo has a brand new password');
    const introspected = await (await fetch(`${gh.url}/token/introspection`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${app.client_id}:${app.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: second.tokens.access_token }),
    })).json();
    expect(introspected).toEqual({ active: false });
    await expect.poll(async () => (await audits()).at(-1)).toMatchObject({ outcome: 'failure', details: { reason: 'password_change', error: expect.stringMatching(/500/) } });
    expect(JSON.stringify(await audits())).not.toContain(received[2] ?? 'no token');
  });

  it('takes only an https (or loopback http) URI without a fragment', async () => {
    await expect(gh.cli('client', 'create', '--name', 'bad', '--redirect-uri', CALLBACK, '--backchannel-logout-uri', 'http://rp.example.com/logout')).rejects.toThrow(/back-channel logout URI/);
    await expect(gh.cli('client', 'create', '--name', 'bad', '--redirect-uri', CALLBACK, '--backchannel-logout-uri', 'https://rp.example.com/logout#x')).rejects.toThrow(/back-channel logout URI/);
  });
});
