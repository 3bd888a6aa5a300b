// The floor: a bare oidc-provider (memory adapter) doing client credentials with ES256 JWT access
// tokens for one resource — the library underneath Gatehouse with nothing of ours on top. Started by
// bench/run.ts as its own process (pinned like the Gatehouse server); prints READY when listening.
//
//   node --import tsx bench/floor.ts <port> <client_id> <client_secret> <resource>
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, resource] = process.argv.slice(2);
const jwk = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });

const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  // Only ES256 keys here, so the clients' default id_token alg (RS256) must follow it.
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  clients: [{ client_id: clientId, client_secret: clientSecret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [], id_token_signed_response_alg: 'ES256' }],
  jwks: { keys: [{ ...jwk, kid: 'floor', alg: 'ES256', use: 'sig' }] },
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({ scope: 'tools:read', audience: resource, accessTokenTTL: 900, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
    },
  },
  scopes: ['tools:read'],
});
provider.listen(Number(port), '127.0.0.1', () => process.stdout.write('READY\n'));
