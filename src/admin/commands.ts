// Admin commands shared by the `gatehouse` CLI and the embedded control socket. Each takes argv
// and returns a JSON-serialisable result; errors are CommandError with a message for the operator.
import crypto from 'node:crypto';
import { ZodError } from 'zod';
import type { Deps } from '../app.ts';
import { POLICY_USAGE, policyCommands } from './policy-commands.ts';
import { CONNECTION_USAGE, connectionCommands } from './connection-commands.ts';
import { IMPORT_USAGE, importCommands } from './import-command.ts';
import { LIVEKIT_USAGE, livekitCommands } from './livekit-commands.ts';
import { revokeAsOperator } from '../revocation/admin.ts';
import { hashId } from '../revocation/store.ts';
import { isAdminApi } from './api-scopes.ts';
import { createRoles } from '../accounts/roles.ts';
import { HttpError } from '../http/errors.ts';
import { migrate } from '../store/migrate.ts';
import { ClientUpdateRefused } from '../oidc/clients.ts';
import { createPasskeys } from '../passkeys/store.ts';
import { adminAudit, CommandError, flag, many, one, parse, splitList, type CommandActor } from './args.ts';

export { CommandError };

export type CommandDeps = Pick<Deps, 'accounts' | 'clients' | 'resources' | 'keys' | 'audit' | 'config' | 'revocations' | 'db' | 'log'> & CommandActor;
type Handler = (deps: CommandDeps, args: string[]) => Promise<unknown>;

/**
 * `--jwks`: a JWK Set as JSON text. The command line reads `--jwks @file` itself (src/cli/main.ts)
 * and passes the text; the server never opens a file an argument names (the admin API and the
 * control socket reach this code too).
 */
function parseJwksOption(text: string): unknown {
  if (text.startsWith('@')) throw new CommandError('--jwks @file is read by the gatehouse command line; pass the JSON text here');
  try {
    return JSON.parse(text);
  } catch {
    throw new CommandError('--jwks must be a JSON Web Key Set ({"keys": [...]}) or @file');
  }
}

const commands: Record<string, Handler> = {
  async 'user create'(deps, args) {
    const { values } = parse(args, { email: one, password: one, name: one, role: many, verified: flag });
    if (!values.email) throw new CommandError('--email is required');
    const user = await deps.accounts.createUser({
      email: values.email,
      password: values.password,
      name: values.name,
      roles: values.role ? splitList(values.role) : ['user'],
      emailVerified: Boolean(values.verified),
    });
    await adminAudit(deps, 'admin.user.create', user.id, { roles: values.role ?? ['user'] });
    return user;
  },
  async 'user list'(deps, args) {
    const { values } = parse(args, { limit: one, offset: one });
    return deps.accounts.listUsers({ limit: Number(values.limit ?? 100), offset: Number(values.offset ?? 0) });
  },
  async 'user disable'(deps, args) {
    const { values, positionals } = parse(args, { email: one, id: one });
    const user = await findUser(deps, values.email ?? positionals[0], values.id);
    await deps.accounts.setActive(user.id, false);
    await adminAudit(deps, 'admin.user.disable', user.id);
    return { id: user.id, email: user.email, active: false };
  },
  async 'user enable'(deps, args) {
    const { values, positionals } = parse(args, { email: one, id: one });
    const user = await findUser(deps, values.email ?? positionals[0], values.id);
    await deps.accounts.setActive(user.id, true);
    await adminAudit(deps, 'admin.user.enable', user.id);
    return { id: user.id, email: user.email, active: true };
  },
  // Each of these ends the user's sessions and revokes what was issued to them (src/revocation/accounts.ts).
  async 'user set-password'(deps, args) {
    const { values, positionals } = parse(args, { email: one, id: one, password: one });
    const user = await findUser(deps, values.email ?? positionals[0], values.id);
    const generated = values.password === undefined ? crypto.randomBytes(18).toString('base64url') : undefined;
    await deps.accounts.setPassword(user.id, values.password ?? generated!);
    await adminAudit(deps, 'admin.user.set_password', user.id, { generated: Boolean(generated) });
    // A generated password is printed once, here, like a client secret.
    return { id: user.id, email: user.email, ...(generated ? { password: generated } : {}), sessionsRevoked: true };
  },
  async 'user delete'(deps, args) {
    const { values, positionals } = parse(args, { email: one, id: one });
    const user = await findUser(deps, values.email ?? positionals[0], values.id);
    await assertNotLastAdmin(deps, user.id, 'delete');
    await deps.accounts.deleteUser(user.id);
    await adminAudit(deps, 'admin.user.delete', user.id);
    return { deleted: user.id, email: user.email, sessionsRevoked: true };
  },
  async 'user set-roles'(deps, args) {
    const { values, positionals } = parse(args, { email: one, id: one, role: many });
    const user = await findUser(deps, values.email ?? positionals[0], values.id);
    const roles = splitList(values.role);
    if (!roles.includes('admin')) await assertNotLastAdmin(deps, user.id, 'take the admin role from');
    await deps.accounts.setRoles(user.id, roles);
    await adminAudit(deps, 'admin.user.set_roles', user.id, { roles });
    return { id: user.id, email: user.email, ...(await deps.accounts.rolesAndPermissions(user.id)) };
  },
  async 'user get'(deps, args) {
    const { values, positionals } = parse(args, { email: one, id: one });
    const user = await findUser(deps, values.email ?? positionals[0], values.id);
    return { ...user, ...(await deps.accounts.rolesAndPermissions(user.id)) };
  },
  async 'role list'(deps) {
    return createRoles(deps.db).listRoles();
  },
  async 'role create'(deps, args) {
    const { values, positionals } = parse(args, { name: one, description: one, permission: many });
    const name = values.name ?? positionals[0];
    if (!name) throw new CommandError('a role name is required');
    const role = await createRoles(deps.db).createRole({ name, description: values.description, permissions: splitList(values.permission) });
    await adminAudit(deps, 'admin.role.create', name, { permissions: role.permissions });
    return role;
  },
  async 'role update'(deps, args) {
    const { values, positionals } = parse(args, { name: one, description: one, permission: many, add: many, remove: many });
    const name = values.name ?? positionals[0];
    if (!name) throw new CommandError('a role name is required');
    const role = await createRoles(deps.db).updateRole(name, {
      description: values.description,
      permissions: values.permission ? splitList(values.permission) : undefined,
      add: splitList(values.add),
      remove: splitList(values.remove),
    });
    await adminAudit(deps, 'admin.role.update', name, { permissions: role.permissions });
    return role;
  },
  async 'role delete'(deps, args) {
    const { values, positionals } = parse(args, { name: one, force: flag });
    const name = values.name ?? positionals[0];
    if (!name) throw new CommandError('a role name is required');
    await createRoles(deps.db).deleteRole(name, { force: values.force });
    await adminAudit(deps, 'admin.role.delete', name);
    return { deleted: name };
  },
  // Issue 7: account recovery for a lost authenticator. Revokes the user's sessions and tokens.
  async 'user reset-mfa'(deps, args) {
    const { values, positionals } = parse(args, { email: one, id: one });
    const user = await findUser(deps, values.email ?? positionals[0], values.id);
    const { factors } = await deps.accounts.resetMfa(user.id);
    await adminAudit(deps, 'admin.user.reset_mfa', user.id, { factors });
    return { id: user.id, email: user.email, factorsRemoved: factors, sessionsRevoked: true };
  },
  // Issue 19: a user's passkeys (names and dates only, no key material) and removing one.
  async 'user passkeys'(deps, args) {
    const { values, positionals } = parse(args, { email: one, id: one });
    const user = await findUser(deps, values.email ?? positionals[0], values.id);
    return { id: user.id, email: user.email, passkeys: await createPasskeys(deps.db).list(user.id) };
  },
  async 'user remove-passkey'(deps, args) {
    const { values, positionals } = parse(args, { email: one, id: one, passkey: one });
    const user = await findUser(deps, values.email ?? positionals[0], values.id);
    if (!values.passkey) throw new CommandError('--passkey is required (an id from `user passkeys`)');
    const removed = await createPasskeys(deps.db).remove(user.id, values.passkey);
    if (!removed) throw new CommandError(`user ${user.id} has no passkey ${values.passkey}`, 404);
    await adminAudit(deps, 'admin.user.remove_passkey', user.id, { factor: removed.id, name: removed.name });
    return { id: user.id, email: user.email, removed: { id: removed.id, name: removed.name } };
  },
  async 'client create'(deps, args) {
    const { values } = parse(args, {
      name: one, type: one, 'redirect-uri': many, 'post-logout-redirect-uri': many, grant: many,
      'auth-method': one, 'first-party': flag, scope: one, 'backchannel-logout-uri': one, 'jwks-uri': one, jwks: one,
      'ciba-notification-endpoint': one,
    });
    if (!values.name) throw new CommandError('--name is required');
    const { client, clientSecret } = await deps.clients.createClient({
      name: values.name,
      type: values.type as 'public' | 'confidential' | undefined,
      redirectUris: splitList(values['redirect-uri']),
      postLogoutRedirectUris: splitList(values['post-logout-redirect-uri']),
      grantTypes: values.grant ? (splitList(values.grant) as never) : undefined,
      authMethod: values['auth-method'] as never,
      firstParty: Boolean(values['first-party']),
      scope: values.scope,
      backchannelLogoutUri: values['backchannel-logout-uri'],
      cibaNotificationEndpoint: values['ciba-notification-endpoint'],
      jwksUri: values['jwks-uri'],
      jwks: values.jwks === undefined ? undefined : parseJwksOption(values.jwks) as never, // shape checked by clientInput
    });
    await adminAudit(deps, 'admin.client.create', client.clientId);
    // The secret is shown once, here; it is stored encrypted and never printed again.
    const { clientId, ...rest } = client;
    return { client_id: clientId, ...(clientSecret ? { client_secret: clientSecret } : {}), ...rest };
  },
  // Issue 7: every login for this client needs a second factor (client metadata require_mfa).
  async 'client require-mfa'(deps, args) {
    const { values, positionals } = parse(args, { id: one, off: flag });
    const id = values.id ?? positionals[0];
    if (!id) throw new CommandError('client id is required');
    const r = await deps.db.query(
      `UPDATE clients SET metadata = metadata || jsonb_build_object('require_mfa', $2::boolean) WHERE client_id = $1 RETURNING client_id`,
      [id, !values.off],
    );
    if (r.rows.length === 0) throw new CommandError(`no client ${id}`);
    await adminAudit(deps, 'admin.client.require_mfa', id, { require_mfa: !values.off });
    return { client_id: id, require_mfa: !values.off };
  },
  // A service account for the admin API: client credentials for <ISSUER>/admin/api with read-only or
  // full scope (src/admin/api.ts). Checked again on every API call, so --off takes effect at once.
  async 'client admin-api'(deps, args) {
    const { values, positionals } = parse(args, { id: one, read: flag, full: flag, off: flag });
    const id = values.id ?? positionals[0];
    if (!id) throw new CommandError('client id is required');
    const chosen = (['read', 'full', 'off'] as const).filter((k) => values[k]);
    if (chosen.length !== 1) throw new CommandError('give exactly one of --read, --full, --off');
    const access = chosen[0] === 'off' ? null : chosen[0];
    const r = await deps.db.query<{ grants: string[] | null }>(
      `UPDATE clients SET metadata = CASE WHEN $2::text IS NULL THEN metadata - 'admin_api' ELSE metadata || jsonb_build_object('admin_api', $2::text) END
       WHERE client_id = $1 RETURNING ARRAY(SELECT jsonb_array_elements_text(metadata->'grant_types')) AS grants`,
      [id, access],
    );
    if (r.rows.length === 0) throw new CommandError(`no client ${id}`);
    await adminAudit(deps, 'admin.client.admin_api', id, { admin_api: access });
    const grants = r.rows[0].grants ?? [];
    return {
      client_id: id, admin_api: access,
      ...(access && !grants.includes('client_credentials') ? { warning: 'this client lacks the client_credentials grant, so it cannot get an admin API token by itself' } : {}),
    };
  },
  // Issue 18: change a client without deleting it. List options replace the list; --add-/--remove-
  // redirect-uri edit it; the whole is checked as creation checks it.
  async 'client update'(deps, args) {
    const { values, positionals } = parse(args, {
      id: one, name: one, 'redirect-uri': many, 'add-redirect-uri': many, 'remove-redirect-uri': many, 'clear-redirect-uris': flag,
      'post-logout-redirect-uri': many, 'clear-post-logout-redirect-uris': flag, grant: many, 'add-grant': many, 'remove-grant': many,
      scope: one, 'clear-scope': flag, 'first-party': one, 'backchannel-logout-uri': one, 'clear-backchannel-logout-uri': flag,
    });
    const id = values.id ?? positionals[0];
    if (!id) throw new CommandError('client id is required: gatehouse client update CLIENT_ID [options] (gatehouse client list shows the ids)');
    const current = await deps.clients.findClient(id);
    if (!current) throw new CommandError(`no client ${id} (gatehouse client list shows the ids)`, 404);
    const edit = (list: unknown, replace: string[] | undefined, clear: boolean | undefined, add: string[] | undefined, remove: string[] | undefined) => {
      if (!replace && !clear && !add && !remove) return undefined;
      const base = clear ? [] : replace ? splitList(replace) : (Array.isArray(list) ? list.map(String) : []);
      const removed = new Set(splitList(remove));
      return [...new Set([...base, ...splitList(add)])].filter((x) => !removed.has(x));
    };
    const m = current.metadata;
    const firstParty = values['first-party'];
    if (firstParty !== undefined && firstParty !== 'on' && firstParty !== 'off') throw new CommandError('--first-party takes on or off');
    const changes = {
      name: values.name,
      redirectUris: edit(m.redirect_uris, values['redirect-uri'], values['clear-redirect-uris'], values['add-redirect-uri'], values['remove-redirect-uri']),
      postLogoutRedirectUris: edit(m.post_logout_redirect_uris, values['post-logout-redirect-uri'], values['clear-post-logout-redirect-uris'], undefined, undefined),
      grantTypes: edit(m.grant_types, values.grant, false, values['add-grant'], values['remove-grant']),
      firstParty: firstParty === undefined ? undefined : firstParty === 'on',
      scope: values['clear-scope'] ? null : values.scope,
      backchannelLogoutUri: values['clear-backchannel-logout-uri'] ? null : values['backchannel-logout-uri'],
    };
    const changed = Object.entries(changes).filter(([, v]) => v !== undefined).map(([k]) => k);
    if (changed.length === 0) throw new CommandError('nothing to change: give --name, --redirect-uri, --add-redirect-uri, --grant, --scope, ... (gatehouse help)');
    let client;
    try {
      client = await deps.clients.updateClient(id, changes);
    } catch (err) {
      if (err instanceof ClientUpdateRefused) throw new CommandError(err.message, 409);
      throw err;
    }
    if (!client) throw new CommandError(`no client ${id}`, 404);
    await adminAudit(deps, 'admin.client.update', id, { changed });
    const { clientId, ...rest } = client;
    return { client_id: clientId, ...rest };
  },
  async 'client list'(deps) {
    return (await deps.clients.listClients()).map(({ clientId, ...rest }) => ({ client_id: clientId, ...rest }));
  },
  async 'client delete'(deps, args) {
    const { positionals, values } = parse(args, { id: one });
    const id = values.id ?? positionals[0];
    if (!id) throw new CommandError('client id is required');
    if (!(await deps.clients.deleteClient(id))) throw new CommandError(`no client ${id}`);
    await adminAudit(deps, 'admin.client.delete', id);
    return { deleted: id };
  },
  async 'resource create'(deps, args) {
    const { values } = parse(args, {
      uri: one, name: one, scope: many, scopes: many, ttl: one, signing: one, 'require-mfa': flag, 'default-scope': many, claims: many,
    });
    if (!values.uri) throw new CommandError('--uri is required');
    // The admin API is Gatehouse's own resource (src/admin/api-scopes.ts); a registered twin could be an exchange target.
    if (isAdminApi(deps.config.ISSUER, values.uri)) throw new CommandError(`${values.uri} is reserved for Gatehouse's admin API`);
    const { resource, hs256Secret } = await deps.resources.createResource({
      uri: values.uri,
      name: values.name,
      scopes: splitList([...(values.scope ?? []), ...(values.scopes ?? [])]),
      accessTokenTtl: values.ttl ? Number(values.ttl) : undefined,
      signing: values.signing as never,
      requireMfa: Boolean(values['require-mfa']),
      defaultScopes: values['default-scope'] ? splitList(values['default-scope']) : null,
      claims: splitList(values.claims) as never,
    });
    await adminAudit(deps, 'admin.resource.create', resource.uri, { require_mfa: resource.requireMfa });
    return { ...resource, ...(hs256Secret ? { hs256_secret: hs256Secret } : {}) };
  },
  // Issue 7: token exchange for this resource needs a subject signed in with MFA.
  async 'resource require-mfa'(deps, args) {
    const { values, positionals } = parse(args, { uri: one, off: flag });
    const uri = values.uri ?? positionals[0];
    if (!uri) throw new CommandError('--uri is required');
    const resource = await deps.resources.setRequireMfa(uri, !values.off);
    if (!resource) throw new CommandError(`no resource ${uri}`);
    await adminAudit(deps, 'admin.resource.require_mfa', resource.uri, { require_mfa: resource.requireMfa });
    return { uri: resource.uri, require_mfa: resource.requireMfa };
  },
  // Issue 14: default scopes (for requests that name none of the resource's) and the user claims its tokens carry.
  async 'resource update'(deps, args) {
    const { values, positionals } = parse(args, { uri: one, 'default-scope': many, 'all-scopes-default': flag, claims: many });
    const uri = values.uri ?? positionals[0];
    if (!uri) throw new CommandError('--uri is required');
    if (values['default-scope'] && values['all-scopes-default']) throw new CommandError('give --default-scope or --all-scopes-default, not both');
    const resource = await deps.resources.updateResource(uri, {
      defaultScopes: values['all-scopes-default'] ? null : values['default-scope'] ? splitList(values['default-scope']) : undefined,
      claims: values.claims ? (splitList(values.claims).filter((c) => c !== 'none') as never) : undefined,
    });
    if (!resource) throw new CommandError(`no resource ${uri}`);
    await adminAudit(deps, 'admin.resource.update', resource.uri, { default_scopes: resource.defaultScopes, claims: resource.claims });
    return resource;
  },
  async 'resource list'(deps) {
    return deps.resources.listResources();
  },
  async 'resource delete'(deps, args) {
    const { values, positionals } = parse(args, { uri: one });
    const uri = values.uri ?? positionals[0];
    if (!uri) throw new CommandError('--uri is required');
    if (!(await deps.resources.deleteResource(uri))) throw new CommandError(`no resource ${uri}`);
    await adminAudit(deps, 'admin.resource.delete', uri);
    return { deleted: uri };
  },
  // Standalone, src/cli/main.ts migrates without assembling the app. Here it runs inside a server
  // (the embedded control socket): start-up has migrated already, so this reports what is newer.
  async migrate(deps) {
    return { applied: await migrate(deps.db) };
  },
  async 'keys rotate'(deps) {
    // Old keys stay published for as long as anything they signed can still be valid.
    const publishFor = Math.max(deps.config.ID_TOKEN_TTL, deps.config.ACCESS_TOKEN_TTL) + 300;
    const kids = await deps.keys.rotate(publishFor);
    await adminAudit(deps, 'admin.keys.rotate', null, { kids });
    return { rotated: kids, previousPublishedForSeconds: publishFor };
  },
  async 'keys list'(deps) {
    return deps.keys.list();
  },
  ...policyCommands,
  ...connectionCommands,
  ...importCommands,
  ...livekitCommands,
  // Issue 6: one revocation per call; a user may be named by id or email.
  async revoke(deps, args) {
    const { values } = parse(args, { user: one, grant: one, session: one, jti: one, ttl: one });
    const given = (['user', 'grant', 'session', 'jti'] as const).filter((k) => values[k]);
    if (given.length !== 1) throw new CommandError('give exactly one of --user, --grant, --session, --jti');
    const kind = given[0];
    let id = values[kind]!;
    if (kind === 'user') id = (await findUser(deps, id.includes('@') ? id : undefined, id.includes('@') ? undefined : id)).id;
    const ttl = values.ttl === undefined ? undefined : Number(values.ttl);
    if (ttl !== undefined && !(Number.isInteger(ttl) && ttl > 0)) throw new CommandError('--ttl must be a positive number of seconds');
    const result = await revokeAsOperator(deps, { kind, id, ttl });
    // An opaque access token's value is its jti: the audit log names it by hash (as the Redis key does).
    await adminAudit(deps, 'admin.revoke', kind === 'user' ? id : (result as { subject?: string }).subject ?? null, kind === 'jti' ? { kind, jti_sha256: hashId(id) } : { kind, id });
    return result;
  },
};

/** Refuse to leave Gatehouse with no active administrator. */
async function assertNotLastAdmin(deps: CommandDeps, userId: string, what: string) {
  const admins = await deps.accounts.activeAdminIds();
  if (admins.length === 1 && admins[0] === userId) throw new CommandError(`refusing to ${what} the only active administrator; make another admin first`, 409);
}

async function findUser(deps: CommandDeps, email?: string, id?: string) {
  const user = id ? await deps.accounts.findUserById(id) : email ? await deps.accounts.findUserByEmail(email) : undefined;
  if (!user) throw new CommandError(id || email ? `no user ${id ?? email}` : '--email or --id is required');
  return user;
}

export const COMMAND_NAMES = Object.keys(commands);

export function usage(): string {
  return [
    'usage: gatehouse <command> [options]',
    '  serve                              start the server (default)',
    '  migrate                            apply database migrations',
    '  user create --email E [--password P] [--name N] [--role R ...] [--verified]',
    '  user list | user get --email E | user disable --email E | user enable --email E | user delete --email E',
    '  user set-password --email E [--password P]   (no --password: a generated one, printed once; ends sessions)',
    '  user set-roles --email E --role R ...',
    '  role list | role create NAME [--permission P ...] [--description D]',
    '  role update NAME [--permission P ... (replaces)] [--add P ...] [--remove P ...] [--description D] | role delete NAME [--force]',
    '  client create --name N [--type public|confidential] [--redirect-uri U ...] [--grant G ...]',
    '                [--post-logout-redirect-uri U ...] [--auth-method client_secret_basic|client_secret_post|client_secret_jwt|private_key_jwt]',
    '                [--jwks-uri URL | --jwks JSON|@file] [--first-party]   (keys mean private_key_jwt; docs/clients.md)',
    '                [--backchannel-logout-uri U]   (OIDC back-channel logout: a logout token when a session ends)',
    '                [--ciba-notification-endpoint U] (CIBA ping mode: told there when an approval is answered)',
    '  client update ID [--name N] [--redirect-uri U ... (replaces) | --add-redirect-uri U | --remove-redirect-uri U | --clear-redirect-uris]',
    '                [--post-logout-redirect-uri U ... | --clear-post-logout-redirect-uris] [--grant G ... (replaces) | --add-grant G | --remove-grant G]',
    '                [--scope S | --clear-scope] [--first-party on|off] [--backchannel-logout-uri U | --clear-backchannel-logout-uri]',
    '  client list | client delete ID | client require-mfa ID [--off] | client admin-api ID --read|--full|--off',
    '  resource create --uri U [--scope S ...] [--name N] [--ttl SECONDS] [--signing jwks|hs256] [--require-mfa]',
    '                  [--default-scope S ...] [--claims roles,permissions]',
    '  resource update --uri U [--default-scope S ... | --all-scopes-default] [--claims roles,permissions|none]',
    '  resource list | resource delete --uri U | resource require-mfa --uri U [--off]',
    '  keys rotate | keys list',
    '  user reset-mfa --email E | --id ID   (removes authenticators and recovery codes, ends sessions)',
    '  user passkeys --email E | --id ID   |   user remove-passkey --email E | --id ID --passkey PASSKEY_ID',
    '  revoke --user ID|EMAIL | --grant ID | --session ID | --jti JTI [--ttl SECONDS]',
    ...POLICY_USAGE,
    ...LIVEKIT_USAGE,
    ...CONNECTION_USAGE,
    ...IMPORT_USAGE,
  ].join('\n');
}

/** Run one command; argv is e.g. ['user', 'create', '--email', 'a@b.c']. */
export async function runCommand(deps: CommandDeps, argv: string[]): Promise<unknown> {
  // One-word commands (revoke) take every following argument as options.
  const words = commands[argv[0]] ? 1 : 2;
  const name = argv.slice(0, words).join(' ');
  const handler = commands[name];
  if (!handler) throw new CommandError(`unknown command "${name}"\n${usage()}`);
  try {
    return await handler(deps, argv.slice(words));
  } catch (err) {
    if (err instanceof ZodError) {
      throw new CommandError(err.issues.map((i) => `${i.path.join('.') || 'input'}: ${i.message}`).join('; '));
    }
    if (err instanceof CommandError) throw err;
    if (err instanceof HttpError && err.status < 500) throw new CommandError(err.message, err.status);
    if (err instanceof Error && /taken|exists|unknown role|already|password/i.test(err.message)) throw new CommandError(err.message);
    throw err;
  }
}
