// DPoP proof check for a sender-constrained access token (RFC 9449 §4.3 and §7.1): the proof is a JWT
// signed by the key the token is bound to (`cnf.jkt`, its JWK SHA-256 thumbprint, RFC 7638), made for
// this request (htm, htu), fresh (iat), used once (jti), and for this very token (ath).
import { base64url, calculateJwkThumbprint, decodeProtectedHeader, importJWK, jwtVerify, type JWK } from 'jose';
import { TokenRejectedError } from './errors.ts';

export interface DpopRequest {
  /** The request's `DPoP` header. */
  proof?: string;
  /** The HTTP method, e.g. `POST`. */
  method?: string;
  /** The full URL the request was sent to, as the client saw it (scheme, host, path). */
  url?: string;
}

const PROOF_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'PS256', 'EdDSA', 'Ed25519'];

export async function checkDpopProof(o: { token: string; jkt: string; request: DpopRequest; maxAgeSeconds: number; skew: number; seen: Map<string, number> }) {
  const bad = (why: string) => new TokenRejectedError(`DPoP proof ${why}`, 'invalid_dpop_proof');
  const { proof, method, url } = o.request;
  if (!proof || proof.includes(',')) throw bad('missing, or more than one'); // §4.3 check 1: exactly one
  if (!method || !url) throw new TypeError('DPoP check needs the request method and URL');

  let jwk: JWK;
  let alg: string;
  try {
    const header = decodeProtectedHeader(proof);
    // §4.3 checks 4-6: typ dpop+jwt, an asymmetric alg, a public key in the header.
    if (header.typ !== 'dpop+jwt') throw bad('typ is not dpop+jwt');
    if (!header.alg || !PROOF_ALGORITHMS.includes(header.alg)) throw bad('alg is not an accepted asymmetric algorithm');
    if (!header.jwk || 'd' in header.jwk || 'k' in header.jwk) throw bad('jwk is not a public key');
    jwk = header.jwk as JWK;
    alg = header.alg;
  } catch (err) {
    throw err instanceof TokenRejectedError ? err : bad('is not a JWT');
  }

  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(proof, await importJWK(jwk, alg), { typ: 'dpop+jwt', algorithms: [alg], clockTolerance: o.skew, requiredClaims: ['iat', 'jti', 'htm', 'htu'] }));
  } catch (err) {
    throw bad(`does not verify: ${(err as Error).message}`);
  }
  if (payload.htm !== method.toUpperCase()) throw bad('htm does not match the request method');
  // §4.3 check 9: htu compared without query and fragment, after URI normalization.
  if (typeof payload.htu !== 'string' || !sameTarget(payload.htu, url)) throw bad('htu does not match the request URL');
  const now = Date.now() / 1000;
  const iat = payload.iat as number;
  if (iat > now + o.skew || iat < now - o.maxAgeSeconds - o.skew) throw bad('iat is too far from now');
  // §4.3 check 12 / §11.1: ath binds the proof to this token.
  const ath = base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(o.token))));
  if (payload.ath !== ath) throw bad('ath does not match the access token');
  if ((await calculateJwkThumbprint(jwk, 'sha256')) !== o.jkt) throw new TokenRejectedError('DPoP proof key is not the one the token is bound to', 'invalid_token');
  // §11.1: a proof is single-use within its lifetime. Remembered in this process only (see README).
  const jti = `${payload.jti}`;
  for (const [k, until] of o.seen) if (until < now) o.seen.delete(k);
  if (o.seen.has(jti)) throw bad('was used before (jti replay)');
  o.seen.set(jti, iat + o.maxAgeSeconds + o.skew);
}

function sameTarget(htu: string, url: string) {
  try {
    const a = new URL(htu);
    const b = new URL(url);
    return a.origin === b.origin && a.pathname === b.pathname;
  } catch {
    return false;
  }
}
