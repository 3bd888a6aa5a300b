// Browser sign-in with Gatehouse: the authorization code flow with PKCE S256 (RFC 7636, and OAuth 2.0
// for Browser-Based Apps), through oauth4webapi. Tokens are kept in this page's memory only, never in
// localStorage, sessionStorage or cookies, so a script injected into the page later cannot read them
// from storage and they do not outlive the tab. Across the sign-in redirect only the PKCE verifier,
// state and nonce are kept (sessionStorage; single use, deleted on return). After a reload the user
// signs in again, which Gatehouse's own session cookie makes a redirect without a password prompt.
import * as oauth from 'oauth4webapi';

export interface GatehouseAuthOptions {
  /** Gatehouse's issuer URL. */
  issuer: string;
  /** A public client (`gatehouse client create --type public --redirect-uri <redirectUri>`). */
  clientId: string;
  /** Where Gatehouse sends the browser back with the code; registered on the client. */
  redirectUri: string;
  /** Default `openid profile email offline_access` (offline_access: a refresh token for silent refresh). */
  scope?: string;
  /** RFC 8707 resource to get the access token for (e.g. an MCP server); default: Gatehouse itself. */
  resource?: string;
  /** Where Gatehouse sends the browser after sign-out; registered on the client. */
  postLogoutRedirectUri?: string;
  /** Refresh this long before the access token expires. Default 60 s. */
  refreshBeforeSeconds?: number;
  /** Allow http:// issuers (local development only). */
  allowInsecureRequests?: boolean;
  /** For tests and non-window environments. */
  storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;
  navigate?: (url: string) => void;
}

/** What the UI renders; a new object whenever something changes (for React's useSyncExternalStore). */
export interface AuthSnapshot {
  isAuthenticated: boolean;
  /** The ID token's claims (sub, email, name, …) once signed in. */
  user?: Record<string, unknown>;
  /** When the access token expires (ms since epoch). */
  expiresAt?: number;
  error?: string;
}

export interface GatehouseAuth {
  /** Sends the browser to Gatehouse's sign-in. */
  signIn(options?: { prompt?: string; loginHint?: string; extra?: Record<string, string> }): Promise<void>;
  /** On the redirect URI: exchanges the code (once) and clears it from the address bar. Resolves false when the URL has no sign-in answer. */
  handleRedirectCallback(url?: string): Promise<boolean>;
  /** A valid access token, refreshed first when it is about to expire; undefined when signed out. */
  getAccessToken(): Promise<string | undefined>;
  /** Refreshes now (refresh token rotation); throws when there is no refresh token. */
  refresh(): Promise<void>;
  /** Revokes the refresh token, forgets the tokens, and ends the Gatehouse session (RP-initiated logout). */
  signOut(options?: { postLogoutRedirectUri?: string; endSession?: boolean }): Promise<void>;
  getSnapshot(): AuthSnapshot;
  subscribe(listener: () => void): () => void;
  readonly issuer: string;
}

const PENDING = 'gatehouse.signin';

export function createGatehouseAuth(o: GatehouseAuthOptions): GatehouseAuth {
  const issuer = new URL(o.issuer);
  const client: oauth.Client = { client_id: o.clientId };
  const clientAuth = oauth.None();
  const insecure = o.allowInsecureRequests ? { [oauth.allowInsecureRequests]: true } : {};
  const storage = o.storage ?? globalThis.sessionStorage;
  const navigate = o.navigate ?? ((url: string) => globalThis.location.assign(url));
  const refreshBefore = (o.refreshBeforeSeconds ?? 60) * 1000;
  const listeners = new Set<() => void>();

  // In memory only (see above).
  let tokens: { access: string; refresh?: string; idToken?: string; expiresAt: number } | undefined;
  let snapshot: AuthSnapshot = { isAuthenticated: false };
  let as: Promise<oauth.AuthorizationServer> | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let refreshing: Promise<void> | undefined;

  function publish(next: AuthSnapshot) {
    snapshot = next;
    for (const l of listeners) l();
  }

  function discover() {
    as ??= oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...insecure })
      .then((res) => oauth.processDiscoveryResponse(issuer, res))
      .catch((err) => {
        as = undefined;
        throw err;
      });
    return as;
  }

  function keep(result: oauth.TokenEndpointResponse, user?: Record<string, unknown>) {
    const expiresAt = Date.now() + (result.expires_in ?? 900) * 1000;
    tokens = { access: result.access_token, refresh: result.refresh_token ?? tokens?.refresh, idToken: result.id_token ?? tokens?.idToken, expiresAt };
    publish({ isAuthenticated: true, user: user ?? snapshot.user, expiresAt });
    scheduleRefresh();
  }

  /** Silent refresh: a timer renews the token before it expires, so calls never wait for it. */
  function scheduleRefresh() {
    if (timer) clearTimeout(timer);
    if (!tokens?.refresh) return;
    const wait = Math.max(1000, tokens.expiresAt - Date.now() - refreshBefore);
    timer = setTimeout(() => void auth.refresh().catch(() => undefined), wait);
  }

  function forget(error?: string) {
    if (timer) clearTimeout(timer);
    tokens = undefined;
    publish({ isAuthenticated: false, ...(error ? { error } : {}) });
  }

  const auth: GatehouseAuth = {
    issuer: o.issuer,
    getSnapshot: () => snapshot,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    async signIn(options = {}) {
      const server = await discover();
      const verifier = oauth.generateRandomCodeVerifier();
      const state = oauth.generateRandomState();
      const nonce = oauth.generateRandomNonce();
      storage.setItem(PENDING, JSON.stringify({ verifier, state, nonce }));
      const url = new URL(server.authorization_endpoint!);
      const params: Record<string, string> = {
        client_id: o.clientId,
        redirect_uri: o.redirectUri,
        response_type: 'code',
        scope: o.scope ?? 'openid profile email offline_access',
        code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state,
        nonce,
        ...(o.resource ? { resource: o.resource } : {}),
        ...(options.prompt ? { prompt: options.prompt } : {}),
        ...(options.loginHint ? { login_hint: options.loginHint } : {}),
        ...options.extra,
      };
      // oidc-provider issues refresh tokens for offline_access only with prompt=consent.
      if (!options.prompt && params.scope.split(' ').includes('offline_access')) params.prompt = 'consent';
      for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
      navigate(url.href);
    },

    async handleRedirectCallback(current = globalThis.location?.href) {
      const url = new URL(current);
      if (!url.searchParams.has('code') && !url.searchParams.has('error')) return false;
      const pending = storage.getItem(PENDING);
      // Single use: whatever happens next, this sign-in attempt's secrets are gone.
      storage.removeItem(PENDING);
      globalThis.history?.replaceState(null, '', url.pathname);
      if (!pending) {
        forget('no sign-in was started in this tab');
        return false;
      }
      const { verifier, state, nonce } = JSON.parse(pending) as { verifier: string; state: string; nonce: string };
      try {
        const server = await discover();
        const params = oauth.validateAuthResponse(server, client, url, state);
        const res = await oauth.authorizationCodeGrantRequest(server, client, clientAuth, params, o.redirectUri, verifier, {
          ...insecure,
          ...(o.resource ? { additionalParameters: { resource: o.resource } } : {}),
        });
        const result = await oauth.processAuthorizationCodeResponse(server, client, res, { expectedNonce: nonce, requireIdToken: true });
        keep(result, { ...oauth.getValidatedIdTokenClaims(result) });
        return true;
      } catch (err) {
        forget(describe(err));
        return false;
      }
    },

    async getAccessToken() {
      if (!tokens) return undefined;
      if (tokens.refresh && tokens.expiresAt - Date.now() < refreshBefore) await auth.refresh().catch(() => undefined);
      return tokens && tokens.expiresAt > Date.now() ? tokens.access : undefined;
    },

    refresh() {
      // One refresh at a time: rotation makes the old refresh token unusable (reuse would revoke the grant).
      refreshing ??= (async () => {
        try {
          if (!tokens?.refresh) throw new Error('no refresh token (sign in with offline_access)');
          const server = await discover();
          const res = await oauth.refreshTokenGrantRequest(server, client, clientAuth, tokens.refresh, {
            ...insecure,
            ...(o.resource ? { additionalParameters: { resource: o.resource } } : {}),
          });
          keep(await oauth.processRefreshTokenResponse(server, client, res));
        } catch (err) {
          // A refused refresh (revoked, expired, reused) means signed out.
          if (err instanceof oauth.ResponseBodyError) forget(describe(err));
          throw err;
        } finally {
          refreshing = undefined;
        }
      })();
      return refreshing;
    },

    async signOut(options = {}) {
      const held = tokens;
      forget();
      const server = await discover();
      if (held?.refresh && server.revocation_endpoint) {
        // RFC 7009: revoking the refresh token ends the grant; its access tokens go with it.
        await oauth.revocationRequest(server, client, clientAuth, held.refresh, insecure).then((r) => oauth.processRevocationResponse(r)).catch(() => undefined);
      }
      if (options.endSession === false || !server.end_session_endpoint) return;
      const url = new URL(server.end_session_endpoint);
      url.searchParams.set('client_id', o.clientId);
      if (held?.idToken) url.searchParams.set('id_token_hint', held.idToken);
      const back = options.postLogoutRedirectUri ?? o.postLogoutRedirectUri;
      if (back) url.searchParams.set('post_logout_redirect_uri', back);
      navigate(url.href);
    },
  };
  return auth;
}

function describe(err: unknown) {
  if (err instanceof oauth.AuthorizationResponseError || err instanceof oauth.ResponseBodyError) return `${err.error}${err.error_description ? `: ${err.error_description}` : ''}`;
  return err instanceof Error ? err.message : String(err);
}
