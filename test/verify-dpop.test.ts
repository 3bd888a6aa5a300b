// @gatehouse/verify's checks that need tokens Gatehouse does not issue today: DPoP-bound tokens
// (RFC 9449; Gatehouse has no DPoP yet) and tokens with skewed times. A local issuer serves its JWKS
// and signs them; the requests go through the package's Express middleware as a client would send them.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import { base64url, calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { bearerAuth, createTokenVerifier, TokenRejectedError } from '@gatehouse/verify';

const RESOURCE = 'https://api.example.com/tools';

describe('@gatehouse/verify: DPoP proofs and clock skew', () => {
  let issuer: string;
  let api: string;
  let signing: CryptoKey;
  let holder: { privateKey: CryptoKey; jwk: JWK; jkt: string };
  const closers: (() => void)[] = [];

  beforeAll(async () => {
    const keys = await generateKeyPair('ES256');
    signing = keys.privateKey;
    const jwks = { keys: [{ ...(await exportJWK(keys.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] };
    const idp = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks)));
    await new Promise<void>((r) => idp.listen(0, '127.0.0.1', r));
    issuer = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`;
    closers.push(() => idp.close());

    const h = await generateKeyPair('ES256');
    const jwk = await exportJWK(h.publicKey);
    holder = { privateKey: h.privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) };

    const verifier = createTokenVerifier({ issuer, audience: RESOURCE, dpop: {} });
    const app = express();
    app.get('/tools', bearerAuth(verifier), (req, res) => void res.json({ sub: (req as any).auth.claims.sub }));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    closers.push(() => server.close());
  });
  afterAll(() => closers.forEach((c) => c()));

  const now = () => Math.floor(Date.now() / 1000);
  const accessToken = (claims: Record<string, unknown> = {}, iat = now()) => new SignJWT({ client_id: 'app', scope: 'tools:read', jti: crypto.randomUUID(), ...claims })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
    .setIssuer(issuer).setAudience(RESOURCE).setSubject('user-1').setIssuedAt(iat).setExpirationTime(iat + 300)
    .sign(signing);
  const proof = async (token: string, o: { htm?: string; htu?: string; iat?: number; jti?: string; key?: CryptoKey; jwk?: JWK } = {}) => new SignJWT({
    htm: o.htm ?? 'GET', htu: o.htu ?? `${api}/tools`, jti: o.jti ?? crypto.randomUUID(),
    ath: base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token)))),
  }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: o.jwk ?? holder.jwk }).setIssuedAt(o.iat ?? now()).sign(o.key ?? holder.privateKey);
  const call = (headers: Record<string, string>, path = '/tools') => fetch(`${api}${path}`, { headers });

  it('accepts a DPoP-bound token with a fresh proof for this request, once', async () => {
    const token = await accessToken({ cnf: { jkt: holder.jkt } });
    const p = await proof(token);
    let res = await call({ authorization: `DPoP ${token}`, dpop: p });
    expect([res.status, await res.json()]).toEqual([200, { sub: 'user-1' }]);
    // RFC 9449 §11.1: the same proof again is a replay.
    res = await call({ authorization: `DPoP ${token}`, dpop: p });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/DPoP algs="[^"]+", error="invalid_dpop_proof"/);
    expect(await res.json()).toMatchObject({ error: 'invalid_dpop_proof', error_description: expect.stringMatching(/replay/) });
  });

  it('refuses a bound token without a proof, as Bearer, or with a proof for another request, token or key', async () => {
    const token = await accessToken({ cnf: { jkt: holder.jkt } });
    const other = await generateKeyPair('ES256');
    const cases: [string, Record<string, string>, RegExp][] = [
      ['no proof', { authorization: `DPoP ${token}` }, /missing/],
      ['Bearer scheme', { authorization: `Bearer ${token}`, dpop: await proof(token) }, /Bearer/],
      ['other method', { authorization: `DPoP ${token}`, dpop: await proof(token, { htm: 'POST' }) }, /htm/],
      ['other URL', { authorization: `DPoP ${token}`, dpop: await proof(token, { htu: `${api}/elsewhere` }) }, /htu/],
      ['other token', { authorization: `DPoP ${token}`, dpop: await proof(await accessToken({ cnf: { jkt: holder.jkt } })) }, /ath/],
      ['old proof', { authorization: `DPoP ${token}`, dpop: await proof(token, { iat: now() - 3600 }) }, /iat/],
      ['other key', { authorization: `DPoP ${token}`, dpop: await proof(token, { key: other.privateKey, jwk: await exportJWK(other.publicKey) }) }, /bound/],
    ];
    for (const [what, headers, message] of cases) {
      const res = await call(headers);
      expect(res.status, what).toBe(401);
      expect((await res.json()).error_description, what).toMatch(message);
    }
    // A proof's htu ignores the query (§4.3 check 9).
    const res = await call({ authorization: `DPoP ${token}`, dpop: await proof(token) }, '/tools?page=2');
    expect(res.status).toBe(200);
  });

  it('with dpop.required, refuses a token that is not bound to a key', async () => {
    const verifier = createTokenVerifier({ issuer, audience: RESOURCE, dpop: { required: true } });
    const err = await verifier.verify(await accessToken()).catch((e) => e);
    expect(err).toBeInstanceOf(TokenRejectedError);
    expect(err.message).toMatch(/DPoP-bound/);
    // Without dpop options an unbound token is fine.
    expect((await createTokenVerifier({ issuer, audience: RESOURCE }).verify(await accessToken())).sub).toBe('user-1');
  });

  it('allows clockToleranceSeconds of skew on exp and iat, and no more', async () => {
    const verifier = createTokenVerifier({ issuer, audience: RESOURCE, clockToleranceSeconds: 30 });
    // Issued 20 s "in the future" by a fast clock: within the tolerance.
    expect((await verifier.verify(await accessToken({}, now() + 20))).sub).toBe('user-1');
    const future = await verifier.verify(await accessToken({}, now() + 120)).catch((e) => e);
    expect(future.message).toMatch(/future/);
    // Expired 10 s ago: within the tolerance; 60 s ago: refused.
    expect((await verifier.verify(await accessToken({}, now() - 310))).sub).toBe('user-1');
    const expired = await verifier.verify(await accessToken({}, now() - 360)).catch((e) => e);
    expect([expired.status, expired.message]).toEqual([401, expect.stringMatching(/expired/)]);
    // RFC 9068 §2.2: client_id is required.
    const noClient = await new SignJWT({ scope: 'x' }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
      .setIssuer(issuer).setAudience(RESOURCE).setSubject('u').setIssuedAt().setExpirationTime('5m').sign(signing);
    expect((await verifier.verify(noClient).catch((e) => e)).message).toMatch(/client_id/);
  });
});
