// CLI commands for enterprise SSO connections (issue 4, migrations/007_federation.sql):
//   connection create --name N --issuer URL --client-id ID [--client-secret S] [--domain D ...] [options]
//   connection update NAME [options] | connection list | connection get NAME | connection delete NAME
// Booleans take on|off so `update` can switch either way. The client secret is sealed at rest and
// never printed back.
import type { Deps } from '../app.ts';
import { ConnectionError, type Connection, type ConnectionInput, type Connections } from '../federation/connections.ts';
import { callbackPath, loggedOutPath } from '../federation/paths.ts';
import { toWire } from './wire.ts';
import { adminAudit, CommandError, flag, many, one, onOff, parse, splitList, type CommandActor } from './args.ts';

type ConnectionCommandDeps = Pick<Deps, 'audit' | 'config'> & CommandActor;
type Handler = (deps: ConnectionCommandDeps, args: string[]) => Promise<unknown>;

const OPTIONS = {
  name: one, 'display-name': one, issuer: one, 'client-id': one, 'client-secret': one, 'clear-client-secret': flag,
  scope: many, domain: many, 'clear-domains': flag,
  jit: one, 'link-by-email': one, 'password-login': one, 'trust-mfa': one, enabled: one,
  'email-claim': one, 'email-verified-claim': one, 'name-claim': one, 'groups-claim': one,
  'map-role': many, 'clear-role-map': flag, 'default-role': many,
  // ID-JAG (docs/id-jag.md): redeem this issuer's ID-JAGs, for these clients and resources.
  'id-jag': one, 'id-jag-jwks-uri': one, 'id-jag-jwks': one, 'id-jag-client': many, 'id-jag-resource': many,
};

function jwksOption(v: string | undefined): { keys: { kty: string }[] } | null | undefined {
  if (v === undefined) return undefined;
  if (v === '' || v === 'none') return null;
  try {
    return JSON.parse(v) as { keys: { kty: string }[] };
  } catch {
    throw new CommandError('--id-jag-jwks takes a JWK Set as JSON ({"keys":[...]}), or none');
  }
}


/** --map-role GROUP=ROLE[+ROLE...], repeatable: the upstream group value and the roles it gives. */
function roleMap(values: string[] | undefined, base: Record<string, string[]> = {}): Record<string, string[]> | undefined {
  if (!values?.length) return undefined;
  const map = { ...base };
  for (const v of values) {
    const eq = v.lastIndexOf('=');
    if (eq < 1 || eq === v.length - 1) throw new CommandError(`--map-role ${v}: expected GROUP=ROLE (several roles: GROUP=ROLE1+ROLE2)`);
    map[v.slice(0, eq)] = [...new Set([...(map[v.slice(0, eq)] ?? []), ...v.slice(eq + 1).split('+').filter(Boolean)])];
  }
  return map;
}

const parseOptions = (args: string[]) => parse(args, OPTIONS);

function input(values: ReturnType<typeof parseOptions>['values'], current?: Connection): Partial<ConnectionInput> {
  const claims = {
    ...(values['email-claim'] ? { email: values['email-claim'] } : {}),
    ...(values['email-verified-claim'] ? { email_verified: values['email-verified-claim'] } : {}),
    ...(values['name-claim'] ? { name: values['name-claim'] } : {}),
    ...(values['groups-claim'] ? { groups: values['groups-claim'] } : {}),
  };
  const scopes = splitList(values.scope);
  return {
    displayName: values['display-name'],
    issuer: values.issuer,
    clientId: values['client-id'],
    scopes: scopes.length ? [...new Set(['openid', ...scopes])].join(' ') : undefined,
    domains: values['clear-domains'] ? [] : values.domain ? [...new Set([...(current?.domains ?? []), ...splitList(values.domain)])] : undefined,
    jit: onOff(values.jit, 'jit'),
    linkByEmail: onOff(values['link-by-email'], 'link-by-email'),
    passwordLogin: onOff(values['password-login'], 'password-login'),
    trustMfa: onOff(values['trust-mfa'], 'trust-mfa'),
    enabled: onOff(values.enabled, 'enabled'),
    claimMap: Object.keys(claims).length ? { ...current?.claimMap, ...claims } : undefined,
    roleMap: values['clear-role-map'] ? roleMap(values['map-role'], {}) ?? {} : roleMap(values['map-role'], current?.roleMap),
    defaultRoles: values['default-role'] ? splitList(values['default-role']) : undefined,
    idJag: onOff(values['id-jag'], 'id-jag'),
    idJagJwksUri: values['id-jag-jwks-uri'] === undefined ? undefined : values['id-jag-jwks-uri'] === 'none' ? null : values['id-jag-jwks-uri'],
    idJagJwks: jwksOption(values['id-jag-jwks']),
    // Given: the list is replaced (none: emptied).
    idJagClients: values['id-jag-client'] ? splitList(values['id-jag-client']).filter((c) => c !== 'none') : undefined,
    idJagResources: values['id-jag-resource'] ? splitList(values['id-jag-resource']).filter((r) => r !== 'none') : undefined,
  };
}

function store(deps: ConnectionCommandDeps): Connections {
  const connections = (deps as Partial<Deps>).connections;
  if (!connections) throw new CommandError('connection commands need the database');
  return connections;
}

/** What the operator registers at the upstream IdP. */
function shown(deps: ConnectionCommandDeps, c: Connection) {
  return {
    ...c,
    // A record of fields (unlike the claim and role maps, which are data): snake_case too (src/admin/wire.ts).
    idJag: toWire(c.idJag),
    redirect_uri: `${deps.config.ISSUER}${callbackPath}`,
    post_logout_redirect_uri: `${deps.config.ISSUER}${loggedOutPath}`,
  };
}

const record = (deps: ConnectionCommandDeps, type: string, subject: string, details: Record<string, unknown> = {}) => adminAudit(deps, type, subject, details);

function positional(positionals: string[], value: string | undefined) {
  const name = value ?? positionals[0];
  if (!name) throw new CommandError('connection name is required');
  return name;
}

const handlers: Record<string, Handler> = {
  async 'connection create'(deps, args) {
    const { values, positionals } = parseOptions(args);
    const name = positional(positionals, values.name);
    if (!values.issuer) throw new CommandError('--issuer is required (the upstream issuer URL; discovery is read from it)');
    if (!values['client-id']) throw new CommandError('--client-id is required (the client id Gatehouse has at the upstream IdP), e.g. gatehouse connection create acme --issuer https://login.acme.com --client-id gatehouse --client-secret S --domain acme.com');
    const connection = await store(deps).create({ ...input(values), name, clientSecret: values['client-secret'] } as ConnectionInput);
    await record(deps, 'admin.connection.create', name, { issuer: connection.issuer, domains: connection.domains });
    return shown(deps, connection);
  },
  async 'connection update'(deps, args) {
    const { values, positionals } = parseOptions(args);
    const name = positional(positionals, values.name);
    const current = await store(deps).find(name);
    if (!current) throw new CommandError(`no connection ${name}`);
    const patch = input(values, current);
    const connection = await store(deps).update(name, {
      ...patch,
      ...(values['clear-client-secret'] ? { clientSecret: null } : values['client-secret'] ? { clientSecret: values['client-secret'] } : {}),
    });
    const changed = Object.entries(patch).filter(([, v]) => v !== undefined).map(([k]) => k);
    await record(deps, 'admin.connection.update', name, { changed: [...changed, ...(values['client-secret'] || values['clear-client-secret'] ? ['clientSecret'] : [])] });
    return shown(deps, connection);
  },
  async 'connection list'(deps) {
    return (await store(deps).list()).map((c) => shown(deps, c));
  },
  async 'connection get'(deps, args) {
    const { values, positionals } = parseOptions(args);
    const name = positional(positionals, values.name);
    const c = await store(deps).find(name);
    if (!c) throw new CommandError(`no connection ${name}`);
    return shown(deps, c);
  },
  async 'connection delete'(deps, args) {
    const { values, positionals } = parseOptions(args);
    const name = positional(positionals, values.name);
    // Linked identities go with it (ON DELETE CASCADE); the local accounts stay.
    if (!(await store(deps).remove(name))) throw new CommandError(`no connection ${name}`);
    await record(deps, 'admin.connection.delete', name);
    return { deleted: name };
  },
};

/** A connection the store refuses (unknown, name or domain taken) is an operator mistake like a bad flag. */
function asCliCommands(hs: Record<string, Handler>): Record<string, Handler> {
  return Object.fromEntries(Object.entries(hs).map(([name, handler]) => [name, async (deps: ConnectionCommandDeps, args: string[]) => {
    try {
      return await handler(deps, args);
    } catch (err) {
      throw err instanceof ConnectionError ? new CommandError(err.message) : err;
    }
  }]));
}

export const connectionCommands = asCliCommands(handlers);

export const CONNECTION_USAGE = [
  '  connection create NAME --issuer URL --client-id ID [--client-secret S] [--domain D ...] [--display-name N]',
  '                [--scope S ...] [--jit on|off] [--link-by-email on|off] [--password-login on|off] [--trust-mfa on|off]',
  '                [--email-claim C] [--email-verified-claim C] [--name-claim C] [--groups-claim C]',
  '                [--map-role GROUP=ROLE[+ROLE] ...] [--default-role R ...] [--enabled on|off]',
  '                [--id-jag on|off] [--id-jag-jwks-uri URL|none] [--id-jag-jwks JSON|none] [--id-jag-client ID ...] [--id-jag-resource URI ...]',
  '  connection update NAME [same options] [--clear-client-secret] [--clear-domains] [--clear-role-map]',
  '  connection list | connection get NAME | connection delete NAME',
];
