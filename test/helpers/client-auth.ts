// Client authentication as a client does it: key pairs and JWK Sets for private_key_jwt, client
// assertions (RFC 7523) signed by hand where a test needs a particular alg, audience or jti, a
// jwks_uri served over TLS with a throw-away certificate for `localhost`, and a token request that
// authenticates each of the ways discovery lists. The TLS server also serves client metadata documents.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';

export type KeyAlg = 'RS256' | 'PS256' | 'ES256' | 'Ed25519' | 'EdDSA';

export interface ClientKey {
  alg: KeyAlg;
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

export async function clientKey(alg: KeyAlg = 'ES256'): Promise<ClientKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = crypto.randomUUID();
  return { alg, kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, use: 'sig' } };
}

export const jwksOf = (...keys: ClientKey[]) => ({ keys: keys.map((k) => k.publicJwk) });

/** A client_assertion (RFC 7523 §3): iss = sub = client_id, aud, a fresh jti, exp in a minute. */
export async function assertion(clientId: string, key: ClientKey | { secret: string }, opts: { aud: string | string[]; jti?: string; iss?: string; exp?: number; alg?: string }) {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({})
    .setIssuer(opts.iss ?? clientId).setSubject(clientId).setAudience(opts.aud)
    .setJti(opts.jti ?? crypto.randomUUID()).setIssuedAt(now).setExpirationTime(opts.exp ?? now + 60);
  if ('secret' in key) return jwt.setProtectedHeader({ alg: opts.alg ?? 'HS256' }).sign(new TextEncoder().encode(key.secret));
  return jwt.setProtectedHeader({ alg: opts.alg ?? key.alg, kid: key.kid }).sign(key.privateKey);
}

export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export type Auth =
  | { method: 'client_secret_basic' | 'client_secret_post'; clientId: string; secret: string }
  | { method: 'jwt'; clientId: string; assertion: string }
  | { method: 'none'; clientId: string };

/** POST a form to a Gatehouse endpoint, authenticated as `auth` says. */
export async function postForm(url: string, auth: Auth, params: Record<string, string>, headers: Record<string, string> = {}) {
  const body = new URLSearchParams(params);
  const h: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', ...headers };
  if (auth.method === 'client_secret_basic') h.authorization = `Basic ${Buffer.from(`${encodeURIComponent(auth.clientId)}:${encodeURIComponent(auth.secret)}`).toString('base64')}`;
  if (auth.method === 'client_secret_post') body.set('client_id', auth.clientId), body.set('client_secret', auth.secret);
  if (auth.method === 'jwt') body.set('client_assertion_type', JWT_BEARER), body.set('client_assertion', auth.assertion);
  if (auth.method === 'none') body.set('client_id', auth.clientId);
  const res = await fetch(url, { method: 'POST', headers: h, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : {}) as Record<string, any> };
}

/** A certificate for `localhost`, signed by itself: `ca` is the file to trust it by (its own cert). */
export function selfSignedLocalhost() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost',
    '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
  return {
    key: fs.readFileSync(path.join(dir, 'key.pem')), cert: fs.readFileSync(path.join(dir, 'cert.pem')), ca: path.join(dir, 'cert.pem'),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** An https server for `localhost` with its own certificate (pass `ca` as CIMD_CA_FILE); serves `keys` at /jwks. */
export async function startJwksServer() {
  const tlsFiles = selfSignedLocalhost();
  const sets = new Map<string, unknown>();
  const hits = new Map<string, number>();
  const server = https.createServer({ key: tlsFiles.key, cert: tlsFiles.cert }, (req, res) => {
    const p = req.url ?? '';
    hits.set(p, (hits.get(p) ?? 0) + 1);
    const set = sets.get(p);
    if (typeof set === 'string') return res.writeHead(302, { location: set }).end();
    if (!set) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(set));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `https://localhost:${(server.address() as AddressInfo).port}`;
  return {
    ca: tlsFiles.ca,
    /** Serve a key set (or any JSON document, given its own URL) at a fresh path; returns its URL. */
    serve(doc: { keys: JWK[] } | ((url: string) => unknown)): string {
      const p = `/doc/${crypto.randomUUID()}`;
      sets.set(p, typeof doc === 'function' ? doc(`${base}${p}`) : doc);
      return `${base}${p}`;
    },
    host: new URL(base).host,
    /** A path that redirects to `target`. */
    redirect(target: string): string {
      const p = `/redirect/${crypto.randomUUID()}`;
      sets.set(p, target);
      return `${base}${p}`;
    },
    hits: (url: string) => hits.get(new URL(url).pathname) ?? 0,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      tlsFiles.remove();
    },
  };
}
