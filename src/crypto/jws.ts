// Compact JWS with node:crypto key objects, for the tokens Gatehouse signs and checks itself.
//
// jose (v6) signs and verifies through WebCrypto, which on Node costs about twice what
// crypto.sign/crypto.verify with a KeyObject do (ES256 sign 44 → 20 µs, verify 82 → 46 µs of CPU on
// the bench machine), and every token path signs or verifies at least once. So the signature is
// made and checked here; everything else about a JWT is still jose's: the claims (iss, aud, exp,
// nbf, iat, typ, required claims) are validated by jose's own `UnsecuredJWT.decode` on the verified
// payload, so the rules and error classes callers map (JWTExpired, JWTClaimValidationFailed) stay
// the library's.
//
// Only what Gatehouse issues is accepted: ES256 and RS256 with a `kid` naming a key of the ring,
// the header's alg equal to that key's own, no `crit` and no `b64` (RFC 7797) header.
import crypto from 'node:crypto';
import { UnsecuredJWT, errors, type JWK, type JWTPayload, type JWTVerifyOptions } from 'jose';

export type SigningAlg = 'ES256' | 'RS256';
const ALGS = new Set<string>(['ES256', 'RS256']);

export interface JwsKey {
  kid: string;
  alg: SigningAlg;
  key: crypto.KeyObject;
}

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64url');
// ES256 signatures are r || s (RFC 7518 §3.4), not DER.
const options = (k: JwsKey): crypto.SignKeyObjectInput | crypto.VerifyKeyObjectInput =>
  (k.alg === 'ES256' ? { key: k.key, dsaEncoding: 'ieee-p1363' } : { key: k.key });

/** A signature over `data` (the JWS signing input), as JWS wants it. */
export function signBytes(k: JwsKey, data: Buffer): Buffer {
  return crypto.sign('sha256', data, options(k) as crypto.SignKeyObjectInput);
}

/** A compact JWS of `payload`, the header's alg and kid set from the key. */
export function signJwt(k: JwsKey, header: Record<string, unknown>, payload: Record<string, unknown>): string {
  // Not `{ ...header, alg, kid }`: on Node 20 a literal adding properties after a spread gets a
  // hidden class of its own each time (docs/performance.md).
  const h = Object.assign({}, header);
  h.alg = k.alg;
  h.kid = k.kid;
  const input = `${b64(JSON.stringify(h))}.${b64(JSON.stringify(payload))}`;
  return `${input}.${signBytes(k, Buffer.from(input)).toString('base64url')}`;
}

/**
 * A compact HS256 JWS of `payload` with the header `{"alg":"HS256"}`, what a LiveKit server takes
 * (its API secret, as UTF-8 bytes, is the key). jose's SignJWT does the same through WebCrypto with a
 * new secret key object and a copy of the payload per claim set.
 */
export function signHs256Jwt(secret: string, payload: Record<string, unknown>): string {
  const input = `${HS256_HEADER}.${b64(JSON.stringify(payload))}`;
  return `${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`;
}
const HS256_HEADER = b64('{"alg":"HS256"}');

/** A private JWK of ours (RS256 or ES256, with kid) as a signing key. */
export function signingKey(jwk: JWK): JwsKey {
  if (!jwk.kid || !jwk.alg || !ALGS.has(jwk.alg)) throw new Error(`signing key without kid or with an unsupported alg (${jwk.alg})`);
  return { kid: jwk.kid, alg: jwk.alg as SigningAlg, key: crypto.createPrivateKey({ key: jwk as crypto.JsonWebKey, format: 'jwk' }) };
}

/** The public halves of private (or public) JWKs, by kid, for verifyJwt. */
export function verificationKeys(jwks: JWK[]): Map<string, JwsKey> {
  const ring = new Map<string, JwsKey>();
  for (const jwk of jwks) {
    if (!jwk.kid || !jwk.alg || !ALGS.has(jwk.alg)) continue;
    const key = crypto.createPublicKey({ key: jwk as crypto.JsonWebKey, format: 'jwk' });
    ring.set(jwk.kid, { kid: jwk.kid, alg: jwk.alg as SigningAlg, key });
  }
  return ring;
}

const invalid = (msg: string) => new errors.JWSInvalid(msg);

/**
 * Verify a compact JWS made with a key of `ring`, then its claims with jose (`options` as for jose's
 * jwtVerify). Throws jose's errors: JWSInvalid for a malformed token or header, JWSSignatureVerificationFailed,
 * JWKSNoMatchingKey for an unknown kid, and the claim errors of jwtVerify.
 */
export function verifyJwt(token: string, ring: Map<string, JwsKey>, opts: JWTVerifyOptions & { algorithms?: SigningAlg[] } = {}):
  { payload: JWTPayload; protectedHeader: Record<string, unknown> } {
  const parts = token.split('.');
  if (parts.length !== 3) throw invalid('Invalid Compact JWS');
  const [h, p, s] = parts;
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
  } catch {
    throw invalid('JWS Protected Header is invalid');
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) throw invalid('JWS Protected Header is invalid');
  if ('crit' in header || 'b64' in header) throw invalid('JWS Protected Header carries an extension this server does not issue');
  const { alg, kid } = header;
  if (typeof alg !== 'string' || !ALGS.has(alg) || (opts.algorithms && !opts.algorithms.includes(alg as SigningAlg))) {
    throw new errors.JOSEAlgNotAllowed('"alg" (Algorithm) Header Parameter value not allowed');
  }
  const key = typeof kid === 'string' ? ring.get(kid) : undefined;
  if (!key || key.alg !== alg) throw new errors.JWKSNoMatchingKey();
  const ok = crypto.verify('sha256', Buffer.from(`${h}.${p}`), options(key) as crypto.VerifyKeyObjectInput, Buffer.from(s, 'base64url'));
  if (!ok) throw new errors.JWSSignatureVerificationFailed();
  // The signature holds: jose checks the claims, on the same payload under an unsecured header that
  // carries the typ (jose's `typ` option reads it from the header).
  const unsecured = `${b64(JSON.stringify(typeof header.typ === 'string' ? { alg: 'none', typ: header.typ } : { alg: 'none' }))}.${p}.`;
  const { payload } = UnsecuredJWT.decode(unsecured, opts);
  return { payload, protectedHeader: header };
}
