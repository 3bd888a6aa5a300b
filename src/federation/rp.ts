// The relying-party side of a connection, with openid-client v6 (a certified RP; nothing here
// re-implements it): discovery, the authorization request (code + PKCE S256 + state + nonce), the
// code exchange with ID token validation, and userinfo when the ID token lacks a mapped claim.
import * as oidc from 'openid-client';
import type { Connection, Connections } from './connections.ts';
import { isLoopbackHttp } from './connections.ts';

/** Discovery documents are re-read this often (and whenever the connection changes). */
const DISCOVERY_TTL_MS = 10 * 60_000;
/** An upstream that does not answer within this many seconds is reported as an upstream error. */
const UPSTREAM_TIMEOUT_S = 10;

export interface UpstreamStart {
  url: URL;
  state: string;
  nonce: string;
  codeVerifier: string;
}

export interface UpstreamIdentity {
  /** Issuer-scoped subject (OIDC Core §2: sub is unique only within its issuer). */
  subject: string;
  claims: Record<string, unknown>;
  idToken: string | undefined;
}

/** An upstream failure the user sees as a readable page and the client as an OIDC error. */
export class UpstreamError extends Error {
  constructor(public readonly error: string, public readonly description: string, public readonly reason: string) {
    super(description);
    this.name = 'UpstreamError';
  }
}

export function createRelyingParty(connections: Connections, opts: { redirectUri: string }) {
  const cache = new Map<string, { at: number; version: number; config: Promise<oidc.Configuration> }>();

  async function discover(connection: Connection): Promise<oidc.Configuration> {
    const secret = await connections.clientSecret(connection.name);
    // http:// only for loopback issuers (validated when the connection is saved, checked again here).
    const insecure = isLoopbackHttp(connection.issuer);
    return oidc.discovery(
      new URL(connection.issuer),
      connection.clientId,
      { redirect_uris: [opts.redirectUri], response_types: ['code'], ...(secret ? { client_secret: secret } : {}) },
      secret ? oidc.ClientSecretBasic(secret) : oidc.None(),
      { execute: insecure ? [oidc.allowInsecureRequests] : [], timeout: UPSTREAM_TIMEOUT_S },
    );
  }

  /** The upstream's openid-client configuration, cached per connection version. */
  async function configuration(connection: Connection): Promise<oidc.Configuration> {
    const version = connection.updatedAt.getTime();
    const hit = cache.get(connection.name);
    if (hit && hit.version === version && Date.now() - hit.at < DISCOVERY_TTL_MS) return hit.config;
    const config = discover(connection);
    cache.set(connection.name, { at: Date.now(), version, config });
    try {
      return await config;
    } catch (err) {
      cache.delete(connection.name);
      throw new UpstreamError('temporarily_unavailable', `${connection.displayName} could not be reached. Try again later.`, `discovery: ${(err as Error).message}`);
    }
  }

  async function start(connection: Connection, params: { loginHint?: string; prompt?: string; maxAge?: number }): Promise<UpstreamStart> {
    const config = await configuration(connection);
    const codeVerifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: opts.redirectUri,
      scope: connection.scopes,
      response_type: 'code',
      code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      nonce,
      ...(params.loginHint ? { login_hint: params.loginHint } : {}),
      ...(params.prompt === 'login' ? { prompt: 'login' } : {}),
      ...(params.maxAge !== undefined ? { max_age: String(params.maxAge) } : {}),
    });
    return { url, state, nonce, codeVerifier };
  }

  /**
   * Validate the authorization response (state, RFC 9207 iss), redeem the code with the PKCE
   * verifier, validate the ID token (signature, iss, aud, exp, nonce), and add userinfo claims the
   * ID token lacks.
   */
  async function complete(connection: Connection, callbackUrl: URL, checks: { state: string; nonce: string; codeVerifier: string; maxAge?: number }): Promise<UpstreamIdentity> {
    const config = await configuration(connection);
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      tokens = await oidc.authorizationCodeGrant(config, callbackUrl, {
        pkceCodeVerifier: checks.codeVerifier,
        expectedState: checks.state,
        expectedNonce: checks.nonce,
        idTokenExpected: true,
        ...(checks.maxAge !== undefined ? { maxAge: checks.maxAge } : {}),
      });
    } catch (err) {
      throw toUpstreamError(connection, err);
    }
    const idClaims = tokens.claims();
    if (!idClaims) throw new UpstreamError('access_denied', `${connection.displayName} did not return an ID token.`, 'no_id_token');
    let claims: Record<string, unknown> = { ...idClaims };
    const wanted = [connection.claimMap.email, connection.claimMap.name, connection.claimMap.groups];
    const missing = wanted.some((c) => claims[c] === undefined);
    if (missing && tokens.access_token && config.serverMetadata().userinfo_endpoint) {
      try {
        // openid-client checks the userinfo `sub` equals the ID token's (OIDC Core §5.3.2).
        const info = await oidc.fetchUserInfo(config, tokens.access_token, idClaims.sub);
        claims = { ...info, ...claims };
      } catch (err) {
        throw toUpstreamError(connection, err);
      }
    }
    return { subject: idClaims.sub, claims, idToken: tokens.id_token };
  }

  /** The upstream's end_session_endpoint URL, when it publishes one (RP-Initiated Logout 1.0). */
  async function endSessionUrl(connection: Connection, params: { idTokenHint?: string; postLogoutRedirectUri?: string; state?: string }): Promise<URL | undefined> {
    const config = await configuration(connection);
    if (!config.serverMetadata().end_session_endpoint) return undefined;
    return oidc.buildEndSessionUrl(config, {
      ...(params.idTokenHint ? { id_token_hint: params.idTokenHint } : {}),
      ...(params.postLogoutRedirectUri ? { post_logout_redirect_uri: params.postLogoutRedirectUri } : {}),
      ...(params.state ? { state: params.state } : {}),
    });
  }

  return { start, complete, endSessionUrl, configuration };
}

export type RelyingParty = ReturnType<typeof createRelyingParty>;

/** openid-client's errors → what the user and the client are told; the detail goes to the audit log only. */
function toUpstreamError(connection: Connection, err: unknown): UpstreamError {
  const name = connection.displayName;
  if (err instanceof oidc.AuthorizationResponseError) {
    // The upstream said no (RFC 6749 §4.1.2.1): access_denied, login_required, ...
    const description = err.error_description ? `${name}: ${err.error_description}` : `${name} refused the sign-in (${err.error}).`;
    return new UpstreamError(err.error === 'access_denied' ? 'access_denied' : 'access_denied', description, `upstream_error: ${err.error}`);
  }
  if (err instanceof oidc.ResponseBodyError) {
    return new UpstreamError('access_denied', `${name} did not accept the sign-in (${err.error}). Try again.`, `token_error: ${err.error}`);
  }
  const e = err as Error & { code?: string };
  return new UpstreamError('access_denied', `The response from ${name} could not be verified. Try again.`, `invalid_response: ${e.code ?? e.name}: ${e.message}`);
}
