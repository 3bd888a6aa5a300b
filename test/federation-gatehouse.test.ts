// Issue 4, second case: the enterprise IdP is another Gatehouse. A user of the upstream Gatehouse
// signs in to a client of the downstream one with only their email typed downstream.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { Browser, CALLBACK, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { followAcross } from './helpers/upstream-idp.ts';

let upstream: TestGatehouse;
let gh: TestGatehouse;

beforeAll(async () => {
  [upstream, gh] = await Promise.all([startTestGatehouse(), startTestGatehouse()]);
  const up = await upstream.cli('client', 'create', '--name', 'Downstream Gatehouse', '--redirect-uri', `${gh.url}/federation/callback`, '--first-party');
  await upstream.cli('user', 'create', '--email', 'frank@initech.test', '--password', 'frank has a long password', '--name', 'Frank', '--verified');
  await gh.cli('connection', 'create', 'initech', '--issuer', upstream.url, '--client-id', up.client_id, '--client-secret', up.client_secret,
    '--domain', 'initech.test', '--scope', 'email profile');
}, 30_000);

afterAll(async () => {
  await gh?.close();
  await upstream?.close();
});

describe('federation to another Gatehouse', () => {
  it('signs in through the upstream Gatehouse login page and creates the account', async () => {
    const c = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK, '--first-party');
    const client = await rpConfig(gh, c.client_id, c.client_secret);
    const verifier = oidc.randomPKCECodeVerifier();
    const nonce = oidc.randomNonce();
    const state = oidc.randomState();
    const authUrl = oidc.buildAuthorizationUrl(client, {
      redirect_uri: CALLBACK, scope: 'openid email profile roles', nonce, state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const browser = new Browser();
    let step = await followAcross(browser, authUrl.href, CALLBACK);
    // Downstream: only the email, through the SSO button.
    expect(step.html).toContain('Use single sign-on (SSO)');
    const uid = /\/interaction\/([^/]+)\/login/.exec(step.html!)![1];
    step = await followAcross(browser, `${gh.url}/interaction/${uid}/federation`, CALLBACK, { form: { ...formOf(step.html!, '/login').fields, email: 'frank@initech.test' } });
    // Upstream Gatehouse: its own login page, email pre-filled from login_hint.
    expect(step.url.startsWith(upstream.url)).toBe(true);
    expect(step.html).toContain('value="frank@initech.test"');
    // The upstream Gatehouse has no connection, so its login page offers no single sign-on.
    expect(step.html).not.toContain('single sign-on');
    const { action, fields } = formOf(step.html!, '/login');
    step = await followAcross(browser, new URL(action, upstream.url).href, CALLBACK, { form: { ...fields, email: 'frank@initech.test', password: 'frank has a long password' } });
    expect(step.html).toBeUndefined();
    const tokens = await oidc.authorizationCodeGrant(client, new URL(step.url), { pkceCodeVerifier: verifier, expectedNonce: nonce, expectedState: state });
    expect(tokens.claims()).toMatchObject({ email: 'frank@initech.test', email_verified: true, name: 'Frank', roles: ['user'], amr: ['fed'] });
  });
});
