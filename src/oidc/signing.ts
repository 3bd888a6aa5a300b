// oidc-provider's signing through node:crypto key objects (src/crypto/jws.ts): its ExternalSigningKey
// (features.externalSigningSupport, the hook meant for KMS/HSM keys) is handed our private keys as
// KeyObjects, so every token it signs (client credentials, access and ID tokens, logout tokens)
// skips WebCrypto, which costs about twice as much per signature on Node. The keys are the same
// ones, so /jwks, the kids and every signature a relying party checks are unchanged.
import crypto from 'node:crypto';
import { ExternalSigningKey } from 'oidc-provider';
import type { JWK } from 'jose';
import { signBytes, signingKey, type JwsKey } from '../crypto/jws.ts';

/** The experiment oidc-provider asks us to acknowledge; a new version of it fails the start loudly. */
export const EXTERNAL_SIGNING_ACK = 'experimental-01';

class NodeSigningKey extends ExternalSigningKey {
  readonly #key: JwsKey;
  readonly #public: crypto.KeyObject;

  constructor(jwk: JWK) {
    super();
    this.#key = signingKey(jwk);
    this.#public = crypto.createPublicKey(this.#key.key);
  }

  override get kid(): string {
    return this.#key.kid;
  }

  override get alg(): string {
    return this.#key.alg;
  }

  /** The public half: oidc-provider publishes it at /jwks and verifies its own tokens with it. */
  override keyObject(): crypto.KeyObject {
    return this.#public;
  }

  override sign(data: Uint8Array): Uint8Array {
    return signBytes(this.#key, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }
}

/** Our private JWKs (active signers first) as oidc-provider's `jwks.keys`. */
export function providerSigningKeys(jwks: { keys: JWK[] }): { keys: ExternalSigningKey[] } {
  return { keys: jwks.keys.map((jwk) => new NodeSigningKey(jwk)) };
}
