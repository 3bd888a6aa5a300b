// The pure exchange rules: room names, room patterns, video grants, scope intersection, and the
// LiveKit token as a LiveKit server sees it (livekit-server-sdk TokenVerifier).
import { describe, expect, it } from 'vitest';
import { TokenVerifier } from 'livekit-server-sdk';
import { grantForRoom, patternToRegExp, roomNameProblem, type RolePolicy } from '../src/exchange/policy.ts';
import { decideScope, ScopeRefused, type ScopeConsent } from '../src/authz/scope-rule.ts';
import { decideRoom, generateRoomName, mintLivekitToken, userParticipant, type IssuedRoomToken, type LivekitSettings } from '../src/exchange/livekit.ts';
import type { PolicyStore } from '../src/exchange/policy.ts';

const vars = { identity: 'user_u1', sub: 'u1' };
const role = (r: Partial<RolePolicy> & { role: string }): RolePolicy => ({
  roomPatterns: [], canPublish: false, canSubscribe: false, canPublishData: false, roomAdmin: false, requireMfa: false, ...r,
});

describe('room names', () => {
  it('accepts safe names and refuses reserved, over-long and unsafe ones', () => {
    expect(roomNameProblem('user_u1_standup')).toBeUndefined();
    expect(roomNameProblem('Admin')).toMatch(/reserved/);
    expect(roomNameProblem('system')).toMatch(/reserved/);
    expect(roomNameProblem('a'.repeat(256))).toBeUndefined();
    expect(roomNameProblem('a'.repeat(257))).toMatch(/256 bytes/);
    expect(roomNameProblem('é'.repeat(129))).toMatch(/256 bytes/); // 258 bytes in UTF-8
    for (const bad of ['../x', 'a b', 'a/b', '_leading', '', 'room<script>']) expect(roomNameProblem(bad), bad).toMatch(/may contain/);
  });

  it('matches globs with placeholders literally, never as regular expressions', () => {
    expect(patternToRegExp('{identity}_*', vars).test('user_u1_abc')).toBe(true);
    expect(patternToRegExp('{identity}_*', vars).test('user_u2_abc')).toBe(false);
    expect(patternToRegExp('{identity}_*', vars).test('xuser_u1_abc')).toBe(false);
    expect(patternToRegExp('team.{sub}', vars).test('team.u1')).toBe(true);
    expect(patternToRegExp('team.{sub}', vars).test('teamXu1')).toBe(false);
    expect(patternToRegExp('*', vars).test('anything')).toBe(true);
  });
});

describe('video grant from role policies', () => {
  const policies = [
    role({ role: 'user', roomPatterns: ['{identity}_*'], canPublish: true, canSubscribe: true, canPublishData: true }),
    role({ role: 'listener', roomPatterns: ['town-hall'], canSubscribe: true }),
    role({ role: 'moderator', roomPatterns: ['town-hall'], canPublish: true, roomAdmin: true }),
  ];
  it('unions only the roles whose patterns admit the room', () => {
    expect(grantForRoom(policies.slice(0, 2), 'town-hall', vars)).toEqual({
      canPublish: false, canSubscribe: true, canPublishData: false, roomAdmin: false, roles: ['listener'],
    });
    expect(grantForRoom(policies, 'town-hall', vars)?.roomAdmin).toBe(true);
    expect(grantForRoom(policies, 'user_u1_x', vars)?.roomAdmin).toBe(false);
    expect(grantForRoom(policies, 'user_u2_x', vars)).toBeUndefined();
  });
});

// The one scope rule (src/authz/scope-rule.ts); test/authorization-model.test.ts walks it on every issuing path.
describe('the one scope rule', () => {
  const resource = { uri: 'https://mcp.example.com/mcp', scopes: ['tools:read', 'tools:write'], defaultScopes: null };
  const user = (permissions: string[], consent: ScopeConsent = 'pre-consented') => ({ principal: { kind: 'user' as const, permissions }, consent });
  const refusal = (f: Parameters<typeof decideScope>[0]) => {
    try {
      return decideScope(f);
    } catch (err) {
      return err instanceof ScopeRefused ? [err.part, err.message] : err;
    }
  };
  it('is requested (or the defaults) ∩ resource ∩ what the principal holds ∩ consent ∩ limits', () => {
    expect(decideScope({ resource, requested: undefined, ...user(['tools:read']) })).toEqual(['tools:read']);
    // OpenID scopes are not the resource's: a request naming only them gets the defaults.
    expect(decideScope({ resource: { ...resource, defaultScopes: ['tools:write'] }, requested: ['openid', 'profile'], ...user(['tools:read', 'tools:write']) })).toEqual(['tools:write']);
    expect(decideScope({ resource, requested: ['tools:read', 'tools:write'], ...user(['tools:read', 'tools:write'], { scopes: ['tools:write'] }) })).toEqual(['tools:write']);
    expect(decideScope({ resource, requested: undefined, principal: { kind: 'client', allowed: null } })).toEqual(['tools:read', 'tools:write']);
    expect(decideScope({ resource, requested: undefined, principal: { kind: 'client', allowed: ['tools:write'] } })).toEqual(['tools:write']);
    expect(decideScope({ resource, requested: undefined, ...user(['tools:read', 'tools:write']), limits: [{ name: 'policy', scopes: null }, { name: 'x', scopes: ['tools:read'] }] })).toEqual(['tools:read']);
  });
  it('refuses an empty result naming the part that was missing', () => {
    expect(refusal({ resource: { ...resource, defaultScopes: [] }, requested: ['openid'], ...user(['tools:read']) })).toEqual(['request', expect.stringMatching(/no default scopes/)]);
    expect(refusal({ resource, requested: ['read'], ...user(['read']) })).toEqual(['resource', 'https://mcp.example.com/mcp does not define read']);
    expect(refusal({ resource, requested: ['tools:write'], ...user(['tools:read']) })).toEqual(['principal', "the user's roles do not hold tools:write"]);
    expect(refusal({ resource, requested: undefined, ...user(['tools:read'], { scopes: [] }) })).toEqual(['consent', expect.stringMatching(/not consented to tools:read/)]);
    // A user principal without a consent fact has consented to nothing.
    expect(refusal({ resource, requested: undefined, principal: { kind: 'user', permissions: ['tools:read'] } })).toEqual(['consent', expect.any(String)]);
    expect(refusal({ resource, requested: undefined, principal: { kind: 'client', allowed: ['other'] } })).toEqual(['principal', 'this client is not allowed any of tools:read tools:write']);
    expect(refusal({ resource, requested: undefined, ...user(['tools:read']), limits: [{ name: 'the subject_token', scopes: ['tools:write'] }] })).toEqual(['limit', 'the subject_token allows none of tools:read']);
  });
});

describe('LiveKit tokens', () => {
  const settings: LivekitSettings = { url: 'wss://lk.example.com', apiKey: 'APIkey', apiSecret: 's'.repeat(40), identityPrefix: 'user_', ttl: 600 };
  const user = { id: 'u1', email: 'u1@example.com', name: 'Ursula', active: true, roles: ['user'], permissions: ['livekit:join'] };
  const store = {
    async rolePolicies(roles: string[]) {
      return roles.includes('user') ? [role({ role: 'user', roomPatterns: ['{identity}_*'], canPublish: true, canSubscribe: true, canPublishData: true })] : [];
    },
    async clientsByAgentName(names: string[]) {
      return names.filter((n) => n === 'helper').map((n) => ({ clientId: 'gh_agent', livekit: false, resources: [], scopes: null, mayAct: true, agentName: n }));
    },
  } as unknown as PolicyStore;

  it('verify with TokenVerifier and carry identity, name, metadata, grant, agents and exp', async () => {
    const p = userParticipant(settings, user);
    const d = await decideRoom(store, settings, p, { room: 'user_u1_call', agents: [{ agentName: 'helper', metadata: '{"lang":"en"}' }] });
    const recorded: IssuedRoomToken[] = [];
    const { token } = await mintLivekitToken(settings, p, d, {}, { store: { async record(t) { recorded.push(t); } }, clientId: 'gh_web', gid: 'g1' });
    const claims = await new TokenVerifier(settings.apiKey, settings.apiSecret).verify(token);
    expect(claims.sub).toBe('user_u1');
    expect(claims.iss).toBe('APIkey');
    expect(claims.name).toBe('Ursula');
    expect(JSON.parse(claims.metadata!)).toEqual({ user_id: 'u1', email: 'u1@example.com', roles: ['user'], permissions: ['livekit:join'], session_type: 'user' });
    expect(claims.video).toEqual({ roomJoin: true, room: 'user_u1_call', canPublish: true, canSubscribe: true, canPublishData: true });
    expect((claims.roomConfig as any).agents).toMatchObject([{ agentName: 'helper', metadata: '{"lang":"en"}' }]);
    expect((claims.roomConfig as any).agents).toHaveLength(1);
    expect(claims.exp! - claims.nbf!).toBe(600);
    // Issue 19.4: recorded with its origin, under the id the participant attributes carry.
    expect(recorded).toEqual([{ tokenId: claims.attributes!['gatehouse.room_token'], identity: 'user_u1', room: 'user_u1_call', userId: 'u1', clientId: 'gh_web', gid: 'g1', sid: undefined }]);
    expect(claims.attributes!['gatehouse.room_token']).toMatch(/^[A-Za-z0-9_-]{22}$/);
    await expect(new TokenVerifier(settings.apiKey, 'x'.repeat(40)).verify(token)).rejects.toThrow();
  });

  it('refuses rooms outside the patterns, unknown agents, and generates own rooms', async () => {
    const p = userParticipant(settings, user);
    await expect(decideRoom(store, settings, p, { room: 'user_u2_call', agents: [] })).rejects.toMatchObject({ code: 'invalid_target' });
    await expect(decideRoom(store, settings, p, { room: 'admin', agents: [] })).rejects.toMatchObject({ code: 'invalid_target', message: /reserved/ });
    await expect(decideRoom(store, settings, p, { room: 'user_u1_x', agents: [{ agentName: 'rogue' }] })).rejects.toMatchObject({ code: 'invalid_target', message: /rogue/ });
    expect(generateRoomName(settings, p)).toMatch(/^user_u1_\d{10}_[0-9a-f]{12}$/);
    expect(generateRoomName({ ...settings, roomPrefix: 'voice' }, p)).toMatch(/^voice_\d{10}_[0-9a-f]{12}$/);
    const d = await decideRoom(store, settings, p, { agents: [] });
    expect(d.room).toMatch(/^user_u1_/);
  });

  it('counts a role policy that requires MFA only for an MFA sign-in (issue 7)', async () => {
    const banker = { ...user, roles: ['user', 'banker'] };
    const mfaStore = {
      ...store,
      async rolePolicies() {
        return [
          role({ role: 'user', roomPatterns: ['{identity}_*', 'vault-lobby'], canSubscribe: true }),
          role({ role: 'banker', roomPatterns: ['vault-*'], canPublish: true, canSubscribe: true, roomAdmin: true, requireMfa: true }),
        ];
      },
    } as unknown as PolicyStore;
    const pwd = userParticipant(settings, banker, undefined, 'urn:gatehouse:acr:pwd');
    const mfa = userParticipant(settings, banker, undefined, 'urn:gatehouse:acr:mfa');
    // Only the MFA role admits the room: step-up would help, so insufficient_user_authentication.
    await expect(decideRoom(mfaStore, settings, pwd, { room: 'vault-1', agents: [] }))
      .rejects.toMatchObject({ code: 'insufficient_user_authentication', message: /multi-factor/ });
    await expect(decideRoom(mfaStore, settings, userParticipant(settings, banker), { room: 'vault-1', agents: [] }))
      .rejects.toMatchObject({ code: 'insufficient_user_authentication' });
    expect((await decideRoom(mfaStore, settings, mfa, { room: 'vault-1', agents: [] })).grant)
      .toEqual({ canPublish: true, canSubscribe: true, canPublishData: false, roomAdmin: true, roles: ['banker'] });
    // Another role admits the room: without MFA the MFA role adds nothing to the grant.
    expect((await decideRoom(mfaStore, settings, pwd, { room: 'vault-lobby', agents: [] })).grant)
      .toEqual({ canPublish: false, canSubscribe: true, canPublishData: false, roomAdmin: false, roles: ['user'] });
    expect((await decideRoom(mfaStore, settings, mfa, { room: 'vault-lobby', agents: [] })).grant)
      .toMatchObject({ canPublish: true, roomAdmin: true, roles: ['user', 'banker'] });
    // No role admits it at all: still invalid_target.
    await expect(decideRoom(mfaStore, settings, mfa, { room: 'elsewhere', agents: [] })).rejects.toMatchObject({ code: 'invalid_target' });
  });
});
