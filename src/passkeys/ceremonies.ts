// The two WebAuthn ceremonies (registration, authentication) through @simplewebauthn/server, with
// Gatehouse's rules around them. Knows no HTTP: the account pages and the sign-in steps call it.
//
// - RP ID and origin come from ISSUER (WebAuthn L3 §5.1.3: the RP ID is a registrable domain
//   suffix of the origin's host; we use the host itself). An issuer on an IP address cannot have
//   passkeys: browsers refuse IP addresses as RP IDs.
// - Each challenge is one-time: stored in the Kv under the challenge itself and spent with Kv.take
//   (GETDEL) before the response is checked, so of parallel submissions of one response (a replay,
//   a double click) exactly one gets past this point. The stored record binds the challenge to what
//   it was made for: a registration for one user, or one sign-in interaction.
// - Sign-in with a passkey alone requires user verification (the authenticator checked a PIN or
//   biometric): possession plus that is two factors. As a second factor presence is enough.
import { isIP } from 'node:net';
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
  type AuthenticationResponseJSON,
  type AuthenticatorTransportFuture,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
} from '@simplewebauthn/server';
import { z } from 'zod';
import type { Config } from '../config/index.ts';
import type { Kv } from '../store/kv.ts';
import type { Passkey, Passkeys, StoredCredential } from './store.ts';

/** How long a ceremony may take, from options to response (WebAuthn's own timeout is the same). */
export const CEREMONY_TTL_SECONDS = 300;

export type Purpose = 'register' | 'login' | 'second_factor';

interface Challenge {
  purpose: Purpose;
  /** register: whose passkey it will be; second_factor: whose passkey must answer. */
  userId?: string;
  /** login and second_factor: the sign-in interaction it belongs to. */
  uid?: string;
}

export type RefusalReason = 'malformed' | 'expired' | 'wrong_ceremony' | 'unknown_credential' | 'not_yours' | 'invalid' | 'sign_count' | 'exists' | 'sso_only';

/** A response that does not sign in or register; `reason` is for audit, the message for the person. */
export class PasskeyRefused extends Error {
  constructor(public readonly reason: RefusalReason, message: string, public readonly passkey?: Passkey) {
    super(message);
    this.name = 'PasskeyRefused';
  }
}

const EXPIRED = 'This passkey request has expired or was already used. Try again.';
const NOT_ACCEPTED = 'That passkey was not accepted. Try again, or use another way to sign in.';

const b64u = z.string().regex(/^[A-Za-z0-9_-]*={0,2}$/).max(16_384);
// The shape @simplewebauthn/browser sends; anything else is refused before a library parses it.
const registrationSchema = z.object({
  id: b64u, rawId: b64u, type: z.literal('public-key'),
  response: z.object({ clientDataJSON: b64u, attestationObject: b64u, transports: z.array(z.string().max(32)).max(8).optional() }).passthrough(),
  clientExtensionResults: z.record(z.string(), z.unknown()).default({}),
  authenticatorAttachment: z.string().max(32).optional(),
}).passthrough();
const authenticationSchema = z.object({
  id: b64u, rawId: b64u, type: z.literal('public-key'),
  response: z.object({ clientDataJSON: b64u, authenticatorData: b64u, signature: b64u, userHandle: b64u.optional() }).passthrough(),
  clientExtensionResults: z.record(z.string(), z.unknown()).default({}),
  authenticatorAttachment: z.string().max(32).optional(),
}).passthrough();

export interface CeremonyDeps {
  config: Pick<Config, 'ISSUER' | 'MFA_ISSUER_NAME'>;
  kv: Pick<Kv, 'set' | 'take'>;
  passkeys: Passkeys;
}

/** The RP ID and origin of this issuer; rpID is undefined when the issuer's host is an IP address. */
export function relyingParty(issuer: string): { rpID?: string; origin: string } {
  const url = new URL(issuer);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return { rpID: isIP(host) ? undefined : host, origin: url.origin };
}

const challengeKey = (challenge: string) => `webauthn:challenge:${challenge}`;

/** The challenge a response answers, read from its clientDataJSON (WebAuthn L3 §5.8.1). */
function challengeOf(clientDataJSON: string): string | undefined {
  try {
    const data = JSON.parse(Buffer.from(clientDataJSON, 'base64url').toString('utf8')) as { challenge?: unknown };
    return typeof data.challenge === 'string' && data.challenge.length <= 512 ? data.challenge : undefined;
  } catch {
    return undefined;
  }
}

export function createCeremonies(deps: CeremonyDeps) {
  const { config, kv, passkeys } = deps;
  const { rpID, origin } = relyingParty(config.ISSUER);
  const available = rpID !== undefined;

  async function remember(challenge: string, c: Challenge) {
    await kv.set(challengeKey(challenge), JSON.stringify(c), CEREMONY_TTL_SECONDS);
  }

  /** Spend the challenge the response answers (once, whoever races), and check what it was for. */
  async function spend(clientDataJSON: string, expected: Challenge): Promise<string> {
    const challenge = challengeOf(clientDataJSON);
    if (!challenge) throw new PasskeyRefused('malformed', NOT_ACCEPTED);
    const raw = await kv.take(challengeKey(challenge));
    if (!raw) throw new PasskeyRefused('expired', EXPIRED);
    const stored = JSON.parse(raw) as Challenge;
    const same = stored.purpose === expected.purpose && stored.uid === expected.uid && stored.userId === expected.userId;
    if (!same) throw new PasskeyRefused('wrong_ceremony', EXPIRED);
    return challenge;
  }

  const descriptor = (c: StoredCredential) => ({ id: c.credentialId, transports: c.transports as AuthenticatorTransportFuture[] });

  /** Options for navigator.credentials.create(): a discoverable credential, none of the user's again. */
  async function registrationOptions(user: { id: string; email: string; name?: string | null }): Promise<PublicKeyCredentialCreationOptionsJSON> {
    const options = await generateRegistrationOptions({
      rpName: config.MFA_ISSUER_NAME,
      rpID: rpID!,
      userName: user.email,
      userDisplayName: user.name || user.email,
      // The WebAuthn user handle is our opaque user id, never the email (WebAuthn L3 §14.6.1).
      userID: new TextEncoder().encode(user.id),
      attestationType: 'none',
      excludeCredentials: (await passkeys.credentialsOf(user.id)).map(descriptor),
      authenticatorSelection: { residentKey: 'required', requireResidentKey: true, userVerification: 'preferred' },
      timeout: CEREMONY_TTL_SECONDS * 1000,
    });
    await remember(options.challenge, { purpose: 'register', userId: user.id });
    return options;
  }

  async function register(userId: string, input: unknown, name: string): Promise<Passkey> {
    const parsed = registrationSchema.safeParse(input);
    if (!parsed.success) throw new PasskeyRefused('malformed', NOT_ACCEPTED);
    const response = parsed.data as unknown as RegistrationResponseJSON;
    const challenge = await spend(response.response.clientDataJSON, { purpose: 'register', userId });
    const result = await verifyRegistrationResponse({ response, expectedChallenge: challenge, expectedOrigin: origin, expectedRPID: rpID, requireUserVerification: false })
      .catch(() => ({ verified: false as const }));
    if (!result.verified) throw new PasskeyRefused('invalid', 'The passkey could not be registered. Try again.');
    const info = result.registrationInfo;
    try {
      return await passkeys.add({
        userId, name, credentialId: info.credential.id, publicKey: info.credential.publicKey, signCount: info.credential.counter,
        transports: info.credential.transports ?? [], aaguid: info.aaguid, deviceType: info.credentialDeviceType, backedUp: info.credentialBackedUp,
      });
    } catch (err) {
      if ((err as Error).name === 'PasskeyExistsError') throw new PasskeyRefused('exists', 'This passkey is already registered.');
      throw err;
    }
  }

  /**
   * Options for navigator.credentials.get(). Sign-in alone (`login`): any discoverable credential
   * of this RP, user verification required. Second factor: only the user's passkeys.
   */
  async function authenticationOptions(purpose: 'login' | 'second_factor', uid: string, userId?: string): Promise<PublicKeyCredentialRequestOptionsJSON> {
    const allow = purpose === 'second_factor' ? (await passkeys.credentialsOf(userId!)).map(descriptor) : [];
    const options = await generateAuthenticationOptions({
      rpID: rpID!,
      allowCredentials: allow,
      userVerification: purpose === 'login' ? 'required' : 'preferred',
      timeout: CEREMONY_TTL_SECONDS * 1000,
    });
    await remember(options.challenge, { purpose, uid, ...(userId ? { userId } : {}) });
    return options;
  }

  /**
   * Check an assertion. `beforeVerify` runs once the passkey (and so its owner) is known and
   * before the signature is checked: the caller counts the attempt against the owner's lockout there.
   */
  async function authenticate(
    purpose: 'login' | 'second_factor',
    expected: { uid: string; userId?: string },
    input: unknown,
    beforeVerify: (passkey: StoredCredential) => Promise<void> = async () => {},
  ): Promise<{ passkey: StoredCredential; userVerified: boolean }> {
    const parsed = authenticationSchema.safeParse(input);
    if (!parsed.success) throw new PasskeyRefused('malformed', NOT_ACCEPTED);
    const response = parsed.data as unknown as AuthenticationResponseJSON;
    const challenge = await spend(response.response.clientDataJSON, { purpose, ...expected });
    const passkey = await passkeys.findByCredentialId(response.id);
    if (!passkey) throw new PasskeyRefused('unknown_credential', NOT_ACCEPTED);
    // The user handle, when the authenticator returns one, must be the owner's (WebAuthn L3 §7.2 step 6).
    const handle = response.response.userHandle ? Buffer.from(response.response.userHandle, 'base64url').toString('utf8') : passkey.userId;
    if (handle !== passkey.userId || (expected.userId && passkey.userId !== expected.userId)) throw new PasskeyRefused('not_yours', NOT_ACCEPTED, passkey);
    await beforeVerify(passkey);
    let result;
    try {
      result = await verifyAuthenticationResponse({
        response, expectedChallenge: challenge, expectedOrigin: origin, expectedRPID: rpID!,
        credential: { id: passkey.credentialId, publicKey: passkey.publicKey, counter: passkey.signCount, transports: passkey.transports as AuthenticatorTransportFuture[] },
        requireUserVerification: purpose === 'login',
      });
    } catch (err) {
      // The library refuses a counter that did not go up; that is worth its own audit reason.
      const regression = /counter/i.test((err as Error).message);
      throw new PasskeyRefused(regression ? 'sign_count' : 'invalid', NOT_ACCEPTED, passkey);
    }
    if (!result.verified) throw new PasskeyRefused('invalid', NOT_ACCEPTED, passkey);
    if (!(await passkeys.recordUse(passkey.id, result.authenticationInfo.newCounter))) throw new PasskeyRefused('sign_count', NOT_ACCEPTED, passkey);
    return { passkey, userVerified: result.authenticationInfo.userVerified };
  }

  return { available, registrationOptions, register, authenticationOptions, authenticate };
}

export type Ceremonies = ReturnType<typeof createCeremonies>;
