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
import { RESOURCE_USAGE, resourceCommands } from './resource-commands.ts';
import { toWire } from './wire.ts';
import { createRoles } from '../accounts/roles.ts';
import { HttpError } from '../http/errors.ts';
import { migrate } from '../store/migrate.ts';
import { ClientUpdateRefused } from '../oidc/clients.ts';
import { createPasskeys } from '../passkeys/store.ts';
import { adminAudit, closest, CommandError, flag, many, one, onOff, parse, splitList, type CommandActor } from './args.ts';
import { CLIENT_PRESETS, isPreset, PRESET_NAMES, type ClientPreset } from './client-presets.ts';

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
    if (!values.email) throw new CommandError('--email is required, e.g. gatehouse user create --email alice@example.com --name Alice --role user');
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
    const user = await findUserByArgs(deps, values, positionals, 'get');
    return { ...user, ...(await deps.accounts.rolesAndPermissions(user.id)) };
  },
  // Issue 18: change a user in place. --role replaces the roles, --add-role / --remove-role edit
  // them; --enabled off ends every session and token (as `user disable`). The last active admin stays.
  async 'user update'(deps, args) {
    const { values, positionals } = parse(args, {
      email: one, id: one, name: one, 'clear-name': flag, 'new-email': one, verified: one, enabled: one,
      role: many, 'add-role': many, 'remove-role': many,
    });
    const user = await findUserByArgs(deps, values, positionals, 'update');
    const active = onOff(values.enabled, 'enabled');
    const verified = onOff(values.verified, 'verified');
    let roles: string[] | undefined;
    if (values.role || values['add-role'] || values['remove-role']) {
      const current = (await deps.accounts.rolesAndPermissions(user.id)).roles;
      const removed = new Set(splitList(values['remove-role']));
      roles = [...new Set([...(values.role ? splitList(values.role) : current), ...splitList(values['add-role'])])].filter((r) => !removed.has(r));
    }
    const profile = {
      name: values['clear-name'] ? null : values.name,
      email: values['new-email'],
      emailVerified: verified,
    };
    const changed = [
      ...Object.entries(profile).filter(([, v]) => v !== undefined).map(([k]) => k),
      ...(roles ? ['roles'] : []), ...(active !== undefined ? ['active'] : []),
    ];
    if (changed.length === 0) throw new CommandError('nothing to change: give --name, --new-email, --verified on|off, --enabled on|off, --role, --add-role or --remove-role (gatehouse help)');
    if (roles && !roles.includes('admin')) await assertNotLastAdmin(deps, user.id, 'take the admin role from');
    if (active === false) await assertNotLastAdmin(deps, user.id, 'disable');
    if (profile.name !== undefined || profile.email !== undefined || profile.emailVerified !== undefined) await deps.accounts.updateProfile(user.id, profile);
    if (roles) await deps.accounts.setRoles(user.id, roles);
    if (active !== undefined && active !== user.active) await deps.accounts.setActive(user.id, active);
    await adminAudit(deps, 'admin.user.update', user.id, { changed, ...(roles ? { roles } : {}), ...(active !== undefined ? { active } : {}) });
    const updated = (await deps.accounts.findUserById(user.id))!;
    return { ...updated, ...(await deps.accounts.rolesAndPermissions(user.id)) };
  },
  async 'role list'(deps) {
    return createRoles(deps.db).listRoles();
  },
  async 'role get'(deps, args) {
    const { values, positionals } = parse(args, { name: one });
    const name = values.name ?? positionals[0];
    if (!name) throw new CommandError('a role name is required: gatehouse role get ROLE (gatehouse role list shows them)');
    const role = await createRoles(deps.db).findRole(name);
    if (!role) throw new CommandError(`no role ${name} (gatehouse role list shows them)`, 404);
    return role;
  },
  async 'role create'(deps, args) {
    const { values, positionals } = parse(args, { name: one, description: one, permission: many });
    const name = values.name ?? positionals[0];
    if (!name) throw new CommandError('a role name is required, e.g. gatehouse role create support --permission tools:read --description "Support desk"');
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
    return { id: user.id, email: user.email, passkeys: toWire(await createPasskeys(deps.db).list(user.id)) };
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
      name: one, preset: one, type: one, 'redirect-uri': many, 'post-logout-redirect-uri': many, grant: many,
      'auth-method': one, 'application-type': one, 'first-party': flag, scope: one, 'backchannel-logout-uri': one, 'jwks-uri': one, jwks: one,
      'ciba-notification-endpoint': one, resource: many, 'agent-name': one,
    });
    // A preset gives the defaults for its kind of client (src/admin/client-presets.ts); flags win.
    let preset: ClientPreset | undefined;
    if (values.preset !== undefined) {
      if (!isPreset(values.preset)) {
        const guess = closest(values.preset, PRESET_NAMES);
        throw new CommandError(`unknown preset ${values.preset}${guess ? `; did you mean ${guess}?` : ''} (presets: ${PRESET_NAMES.join(', ')})`);
      }
      preset = CLIENT_PRESETS[values.preset];
    }
    if (!values.name) throw new CommandError(`--name is required, e.g. ${preset?.example ?? CLIENT_PRESETS.web.example}`);
    const redirectUris = splitList(values['redirect-uri']);
    if (preset?.needsRedirect && redirectUris.length === 0) throw new CommandError(`--preset ${values.preset} needs --redirect-uri, e.g. ${preset.example}`);
    if ((values.resource || values['agent-name']) && !preset?.policy) {
      throw new CommandError('--resource and --agent-name go with --preset agent; for another client set its exchange policy: gatehouse policy client set CLIENT_ID --resource U');
    }
    const resources: string[] = [];
    for (const uri of splitList(values.resource)) {
      const rs = await deps.resources.findResource(uri);
      if (!rs) throw new CommandError(`resource ${uri} is not registered (gatehouse resource create --uri ${uri} --scope ...)`);
      resources.push(rs.uri);
    }
    const type = (values.type ?? (values['auth-method'] || values.jwks || values['jwks-uri'] ? 'confidential' : preset?.type)) as 'public' | 'confidential' | undefined;
    const { client, clientSecret } = await deps.clients.createClient({
      name: values.name,
      type,
      redirectUris,
      postLogoutRedirectUris: splitList(values['post-logout-redirect-uri']),
      grantTypes: (values.grant ? splitList(values.grant) : preset?.grants) as never,
      authMethod: (values['auth-method'] ?? (type === 'confidential' && !values.jwks && !values['jwks-uri'] ? preset?.authMethod : undefined)) as never,
      applicationType: (values['application-type'] ?? preset?.applicationType) as never,
      firstParty: Boolean(values['first-party']),
      scope: values.scope,
      backchannelLogoutUri: values['backchannel-logout-uri'],
      cibaNotificationEndpoint: values['ciba-notification-endpoint'],
      jwksUri: values['jwks-uri'],
      jwks: values.jwks === undefined ? undefined : parseJwksOption(values.jwks) as never, // shape checked by clientInput
    });
    await adminAudit(deps, 'admin.client.create', client.clientId, values.preset ? { preset: values.preset } : {});
    let policy;
    if (preset?.policy) {
      policy = await policyCommands['policy client'](deps, [
        'set', ...(preset.policy.act ? ['--act'] : []), ...resources.map((r) => `--resource=${r}`),
        ...(values['agent-name'] ? [`--agent-name=${values['agent-name']}`] : []), '--', client.clientId,
      ]);
    }
    // The secret is shown once, here; it is stored encrypted and never printed again.
    const { clientId, ...rest } = client;
    return {
      client_id: clientId, ...(clientSecret ? { client_secret: clientSecret } : {}), ...rest,
      ...(values.preset ? { preset: values.preset } : {}), ...(policy ? { exchange_policy: toWire(policy) } : {}),
    };
  },
  async 'client get'(deps, args) {
    const { values, positionals } = parse(args, { id: one });
    const id = values.id ?? positionals[0];
    if (!id) throw new CommandError('client id is required: gatehouse client get CLIENT_ID (gatehouse client list shows the ids)');
    const client = await deps.clients.findClient(id);
    if (!client) throw new CommandError(`no client ${id} (gatehouse client list shows the ids)`, 404);
    const { clientId, ...rest } = client;
    return { client_id: clientId, ...rest };
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
    const firstParty = onOff(values['first-party'], 'first-party');
    const changes = {
      name: values.name,
      redirectUris: edit(m.redirect_uris, values['redirect-uri'], values['clear-redirect-uris'], values['add-redirect-uri'], values['remove-redirect-uri']),
      postLogoutRedirectUris: edit(m.post_logout_redirect_uris, values['post-logout-redirect-uri'], values['clear-post-logout-redirect-uris'], undefined, undefined),
      grantTypes: edit(m.grant_types, values.grant, false, values['add-grant'], values['remove-grant']),
      firstParty,
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
  ...resourceCommands,
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

/** The user a command names: --id, --email, or the first word (an id, or an address with @). */
function findUserByArgs(deps: CommandDeps, values: { email?: string; id?: string }, positionals: string[], verb: string) {
  const word = positionals[0];
  if (!values.email && !values.id && !word) throw new CommandError(`name the user: gatehouse user ${verb} alice@example.com (or --id ID; gatehouse user list shows them)`);
  return findUser(deps, values.email ?? (word?.includes('@') ? word : undefined), values.id ?? (word && !word.includes('@') ? word : undefined));
}

async function findUser(deps: CommandDeps, email?: string, id?: string) {
  const user = id ? await deps.accounts.findUserById(id) : email ? await deps.accounts.findUserByEmail(email) : undefined;
  if (!user) throw new CommandError(id || email ? `no user ${id ?? email} (gatehouse user list shows them)` : '--email or --id is required', id || email ? 404 : 400);
  return user;
}

export const COMMAND_NAMES = Object.keys(commands);

export function usage(): string {
  return [
    'usage: gatehouse <command> [options]',
    '  serve                              start the server (default)',
    '  migrate                            apply database migrations',
    '  user create --email E [--password P] [--name N] [--role R ...] [--verified]',
    '  user list [--limit N] [--offset N] | user get EMAIL|ID | user disable --email E | user enable --email E | user delete --email E',
    '  user update EMAIL|ID [--name N | --clear-name] [--new-email E] [--verified on|off] [--enabled on|off]',
    '                [--role R ... (replaces) | --add-role R | --remove-role R]',
    '  user set-password --email E [--password P]   (no --password: a generated one, printed once; ends sessions)',
    '  user set-roles --email E --role R ...',
    '  role list | role get NAME | role create NAME [--permission P ...] [--description D]',
    '  role update NAME [--permission P ... (replaces)] [--add P ...] [--remove P ...] [--description D] | role delete NAME [--force]',
    `  client create --name N [--preset ${PRESET_NAMES.join('|')}] [--redirect-uri U ...] [--grant G ...]`,
    '                [--type public|confidential] [--application-type web|native] [--post-logout-redirect-uri U ...]',
    '                [--auth-method client_secret_basic|client_secret_post|client_secret_jwt|private_key_jwt]',
    '                [--jwks-uri URL | --jwks JSON|@file] [--first-party]   (keys mean private_key_jwt; docs/clients.md)',
    '                [--backchannel-logout-uri U]   (OIDC back-channel logout: a logout token when a session ends)',
    '                [--ciba-notification-endpoint U] (CIBA ping mode: told there when an approval is answered)',
    '                [--resource U ... --agent-name N]   (--preset agent: its token-exchange policy)',
    '  client update ID [--name N] [--redirect-uri U ... (replaces) | --add-redirect-uri U | --remove-redirect-uri U | --clear-redirect-uris]',
    '                [--post-logout-redirect-uri U ... | --clear-post-logout-redirect-uris] [--grant G ... (replaces) | --add-grant G | --remove-grant G]',
    '                [--scope S | --clear-scope] [--first-party on|off] [--backchannel-logout-uri U | --clear-backchannel-logout-uri]',
    '  client list | client get ID | client delete ID | client require-mfa ID [--off] | client admin-api ID --read|--full|--off',
    ...RESOURCE_USAGE,
    '  keys rotate | keys list',
    '  user reset-mfa --email E | --id ID   (removes authenticators and recovery codes, ends sessions)',
    '  user passkeys --email E | --id ID   |   user remove-passkey --email E | --id ID --passkey PASSKEY_ID',
    '  revoke --user ID|EMAIL | --grant ID | --session ID | --jti JTI [--ttl SECONDS]',
    ...POLICY_USAGE,
    ...LIVEKIT_USAGE,
    ...CONNECTION_USAGE,
    ...IMPORT_USAGE,
    '',
    'get and list print a table; add --json for JSON (snake_case fields, stable for scripts). Other commands print JSON.',
    'Presets (client create --preset): docs/cli.md has what each sets.',
    'Exit codes: 0 done, 1 failed (configuration, database, server), 2 usage or invalid value, 3 not found, 4 conflict.',
  ].join('\n');
}

/** The usage lines of one command (`client create` → its lines of `gatehouse help`). */
export function usageOf(name: string): string[] {
  const lines = usage().split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    // `  client create …` or `… | client get ID | …`: the command's own line, not a mention of it.
    if (!lines[i].startsWith(`  ${name}`) && !lines[i].includes(`| ${name}`)) continue;
    out.push(lines[i]);
    // continuation lines are indented deeper and do not start a command
    while (lines[i + 1]?.startsWith('                ')) out.push(lines[++i]);
  }
  return out;
}

/**
 * Run one command; argv is e.g. ['user', 'create', '--email', 'a@b.c']. The answer has snake_case
 * field names (src/admin/wire.ts) wherever it goes: the CLI, the control socket, the admin API.
 */
export async function runCommand(deps: CommandDeps, argv: string[]): Promise<unknown> {
  // One-word commands (revoke) take every following argument as options.
  const words = commands[argv[0]] ? 1 : 2;
  const name = argv.slice(0, words).join(' ');
  const handler = commands[name];
  if (!handler) {
    const guess = closest(name, COMMAND_NAMES);
    const hint = guess ? `did you mean "${guess}"?` : 'gatehouse help lists every command';
    throw new CommandError(`unknown command "${argv.join(' ').slice(0, 60) || '(none)'}"; ${hint}${guess ? `\n${usageOf(guess).join('\n')}` : ''}`);
  }
  try {
    return toWire(await handler(deps, argv.slice(words)));
  } catch (err) {
    const mistake = asCommandError(err);
    if (!mistake) throw err;
    // A usage mistake gets the command's usage after the first line (the admin API shows the first line only).
    if (mistake.status === 400 && /unknown option|needs a value|is required|Unexpected argument/i.test(mistake.message) && !mistake.message.includes('\n')) {
      throw new CommandError(`${mistake.message}\nusage:\n${usageOf(name).join('\n')}`, 400);
    }
    throw mistake;
  }
}

function asCommandError(err: unknown): CommandError | undefined {
  if (err instanceof ZodError) {
    return new CommandError(err.issues.map((i) => `${i.path.join('.') || 'input'}: ${i.message}`).join('; '), 400);
  }
  if (err instanceof CommandError) return err;
  if (err instanceof HttpError && err.status < 500) return new CommandError(err.message, err.status);
  if (err instanceof Error && /taken|exists|unknown role|already|password/i.test(err.message)) return new CommandError(err.message);
  return undefined;
}
