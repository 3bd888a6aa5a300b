// src/crypto/jws.ts: the node:crypto signer and verifier must agree with jose both ways (a token we
// sign verifies with jose's jwtVerify, and one jose signs verifies here), and refuse what jose
// would refuse: a wrong key, a changed payload, alg confusion, unknown kid, crit/b64 headers,
// and the claim rules (iss, typ, exp, required claims) jose applies.
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createLocalJWKSet, errors, exportJWK, generateKeyPair, jwtVerify, SignJWT, type JWK } from 'jose';
import { signHs256Jwt, signingKey, signJwt, verificationKeys, verifyJwt } from '../src/crypto/jws.ts';

async function key(alg: 'ES256' | 'RS256', kid: string): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(privateKey)), alg, kid, use: 'sig' };
}
const pub = ({ d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...rest }: JWK) => rest;
const now = () => Math.floor(Date.now() / 1000);
const claims = () => ({ iss: 'https://gh.test', sub: 'u1', aud: 'https://rs.test', client_id: 'c1', iat: now(), exp: now() + 60, jti: crypto.randomUUID() });
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

describe('node:crypto JWS', async () => {
  const es = await key('ES256', 'es-1');
  const rs = await key('RS256', 'rs-1');
  const other = await key('ES256', 'es-1'); // same kid, another key
  const ring = verificationKeys([es, rs]);

  for (const jwk of [es, rs]) {
    it(`${jwk.alg}: what it signs verifies with jose, and what jose signs verifies here`, async () => {
      const ours = signJwt(signingKey(jwk), { typ: 'at+jwt' }, claims());
      const { payload, protectedHeader } = await jwtVerify(ours, createLocalJWKSet({ keys: [pub(jwk)] }), { issuer: 'https://gh.test', typ: 'at+jwt' });
      expect(payload.sub).toBe('u1');
      expect(protectedHeader).toEqual({ typ: 'at+jwt', alg: jwk.alg, kid: jwk.kid });
      const theirs = await new SignJWT(claims()).setProtectedHeader({ alg: jwk.alg!, kid: jwk.kid, typ: 'at+jwt' }).sign(await crypto.webcrypto.subtle.importKey('jwk', jwk as crypto.webcrypto.JsonWebKey,
        jwk.alg === 'ES256' ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['sign']));
      expect(verifyJwt(theirs, ring, { issuer: 'https://gh.test', typ: 'at+jwt', requiredClaims: ['client_id'] }).payload.client_id).toBe('c1');
    });
  }

  it('refuses a token signed by another key under a known kid, and a changed payload', () => {
    const forged = signJwt(signingKey(other), { typ: 'at+jwt' }, claims());
    expect(() => verifyJwt(forged, ring)).toThrow(errors.JWSSignatureVerificationFailed);
    const good = signJwt(signingKey(es), { typ: 'at+jwt' }, claims());
    const [h, , s] = good.split('.');
    expect(() => verifyJwt(`${h}.${b64({ ...claims(), sub: 'admin' })}.${s}`, ring)).toThrow(errors.JWSSignatureVerificationFailed);
  });

  it('refuses alg confusion, unknown kids, none, HS256 and extension headers', () => {
    const body = b64(claims());
    const sig = (alg: string, kid: string | undefined, extra: Record<string, unknown> = {}) => {
      const input = `${b64({ alg, ...(kid ? { kid } : {}), ...extra })}.${body}`;
      const k = signingKey(alg === 'RS256' ? rs : es);
      return `${input}.${crypto.sign('sha256', Buffer.from(input), k.alg === 'ES256' ? { key: k.key, dsaEncoding: 'ieee-p1363' } : k.key).toString('base64url')}`;
    };
    // The ES256 key's kid with the header saying RS256: the key's own alg decides.
    expect(() => verifyJwt(sig('RS256', 'es-1'), ring)).toThrow(errors.JWKSNoMatchingKey);
    expect(() => verifyJwt(sig('ES256', 'nope'), ring)).toThrow(errors.JWKSNoMatchingKey);
    expect(() => verifyJwt(sig('ES256', undefined), ring)).toThrow(errors.JWKSNoMatchingKey);
    expect(() => verifyJwt(`${b64({ alg: 'none' })}.${body}.`, ring)).toThrow(errors.JOSEAlgNotAllowed);
    const hs = `${b64({ alg: 'HS256', kid: 'es-1' })}.${body}`;
    expect(() => verifyJwt(`${hs}.${crypto.createHmac('sha256', 'x').update(hs).digest('base64url')}`, ring)).toThrow(errors.JOSEAlgNotAllowed);
    expect(() => verifyJwt(sig('ES256', 'es-1', { crit: ['exp'], exp: 1 }), ring)).toThrow(errors.JWSInvalid);
    expect(() => verifyJwt(sig('ES256', 'es-1', { b64: false }), ring)).toThrow(errors.JWSInvalid);
    expect(() => verifyJwt(sig('RS256', 'rs-1'), ring, { algorithms: ['ES256'] })).toThrow(errors.JOSEAlgNotAllowed);
    expect(() => verifyJwt('a.b', ring)).toThrow(errors.JWSInvalid);
    expect(() => verifyJwt(`${Buffer.from('not json').toString('base64url')}.${body}.AAAA`, ring)).toThrow(errors.JWSInvalid);
  });

  it('applies jose claim rules on the verified payload: iss, typ, exp, required claims', () => {
    const k = signingKey(es);
    expect(() => verifyJwt(signJwt(k, { typ: 'at+jwt' }, claims()), ring, { issuer: 'https://elsewhere' })).toThrow(errors.JWTClaimValidationFailed);
    expect(() => verifyJwt(signJwt(k, { typ: 'JWT' }, claims()), ring, { typ: 'at+jwt' })).toThrow(errors.JWTClaimValidationFailed);
    expect(() => verifyJwt(signJwt(k, {}, claims()), ring, { typ: 'at+jwt' })).toThrow(errors.JWTClaimValidationFailed);
    expect(() => verifyJwt(signJwt(k, { typ: 'at+jwt' }, { ...claims(), exp: now() - 10 }), ring)).toThrow(errors.JWTExpired);
    const { client_id: _c, ...noClient } = claims();
    expect(() => verifyJwt(signJwt(k, { typ: 'at+jwt' }, noClient), ring, { requiredClaims: ['client_id'] })).toThrow(errors.JWTClaimValidationFailed);
  });
  it('HS256 (LiveKit room tokens): jose verifies it with the secret as UTF-8 bytes, and a wrong secret or a changed payload fails', async () => {
    const secret = 'a-livekit-api-secret-of-32-chars!';
    const token = signHs256Jwt(secret, { iss: 'APIkey', sub: 'user_1', video: { roomJoin: true, room: 'r' }, exp: now() + 60 });
    const { payload, protectedHeader } = await jwtVerify(token, new TextEncoder().encode(secret), { issuer: 'APIkey' });
    expect(protectedHeader).toEqual({ alg: 'HS256' });
    expect(payload).toMatchObject({ sub: 'user_1', video: { roomJoin: true, room: 'r' } });
    await expect(jwtVerify(token, new TextEncoder().encode(`${secret}x`))).rejects.toThrow(errors.JWSSignatureVerificationFailed);
    const [h, , sig] = token.split('.');
    await expect(jwtVerify(`${h}.${b64({ iss: 'APIkey', sub: 'admin', exp: now() + 60 })}.${sig}`, new TextEncoder().encode(secret))).rejects.toThrow(errors.JWSSignatureVerificationFailed);
  });
});
