// CLI commands for resource servers (MCP servers and APIs, RFC 8707):
//   resource create --uri U [--scope S ...] [--name N] [--ttl SECONDS] [--signing jwks|hs256] [--require-mfa] ...
//   resource update URI [--name N] [--scope S ... | --add-scope S | --remove-scope S] [--ttl SECONDS] [--require-mfa on|off] ...
//   resource get URI | resource list | resource delete URI | resource require-mfa URI [--off]
// Lookups by URI tolerate a trailing-slash difference (src/oidc/resources.ts). Nothing caches a
// resource: the token endpoint and the exchange read it on every request, so a change counts at once.
import type { Deps } from '../app.ts';
import { isAdminApi } from './api-scopes.ts';
import { adminAudit, CommandError, flag, many, one, onOff, parse, splitList, type CommandActor } from './args.ts';
import type { TokenClaim } from '../oidc/resources.ts';

type ResourceCommandDeps = Pick<Deps, 'audit' | 'config' | 'resources'> & CommandActor;
type Handler = (deps: ResourceCommandDeps, args: string[]) => Promise<unknown>;

const EXAMPLE = 'gatehouse resource create --uri https://mcp.example.com/mcp --scope tools:read';

function uriOf(values: { uri?: string }, positionals: string[], verb: string): string {
  const uri = values.uri ?? positionals[0];
  if (!uri) throw new CommandError(`the resource URI is required: gatehouse resource ${verb} https://mcp.example.com/mcp (gatehouse resource list shows them)`);
  return uri;
}

const notFound = (uri: string) => new CommandError(`no resource ${uri} (gatehouse resource list shows them)`, 404);

/** --claims roles,permissions; `none` clears. */
const claimsOf = (v: string[] | undefined) => (v ? (splitList(v).filter((c) => c !== 'none') as TokenClaim[]) : undefined);

function ttlOf(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new CommandError('--ttl is a number of seconds (30 to 900)');
  return n;
}

const handlers: Record<string, Handler> = {
  async 'resource create'(deps, args) {
    const { values } = parse(args, {
      uri: one, name: one, scope: many, scopes: many, ttl: one, signing: one, 'require-mfa': flag, 'default-scope': many, claims: many,
    });
    if (!values.uri) throw new CommandError(`--uri is required, e.g. ${EXAMPLE}`);
    // The admin API is Gatehouse's own resource (src/admin/api-scopes.ts); a registered twin could be an exchange target.
    if (isAdminApi(deps.config.ISSUER, values.uri)) throw new CommandError(`${values.uri} is reserved for Gatehouse's admin API`);
    const { resource, hs256Secret } = await deps.resources.createResource({
      uri: values.uri,
      name: values.name,
      scopes: splitList([...(values.scope ?? []), ...(values.scopes ?? [])]),
      accessTokenTtl: ttlOf(values.ttl),
      signing: values.signing as never,
      requireMfa: Boolean(values['require-mfa']),
      defaultScopes: values['default-scope'] ? splitList(values['default-scope']) : null,
      claims: claimsOf(values.claims) ?? [],
    });
    await adminAudit(deps, 'admin.resource.create', resource.uri, { require_mfa: resource.requireMfa });
    return { ...resource, ...(hs256Secret ? { hs256_secret: hs256Secret } : {}) };
  },
  // Issue 7: token exchange for this resource needs a subject signed in with MFA.
  async 'resource require-mfa'(deps, args) {
    const { values, positionals } = parse(args, { uri: one, off: flag });
    const uri = uriOf(values, positionals, 'require-mfa');
    const resource = await deps.resources.setRequireMfa(uri, !values.off);
    if (!resource) throw notFound(uri);
    await adminAudit(deps, 'admin.resource.require_mfa', resource.uri, { require_mfa: resource.requireMfa });
    return { uri: resource.uri, require_mfa: resource.requireMfa };
  },
  // Issue 14 (default scopes, token claims) and issue 18 (name, scopes, lifetime, MFA). List options
  // replace; --add-scope / --remove-scope edit. The URI and signing method stay (tokens rely on them).
  async 'resource update'(deps, args) {
    const { values, positionals } = parse(args, {
      uri: one, name: one, scope: many, 'add-scope': many, 'remove-scope': many, ttl: one, 'require-mfa': one,
      'default-scope': many, 'all-scopes-default': flag, claims: many,
    });
    const uri = uriOf(values, positionals, 'update');
    if (values['default-scope'] && values['all-scopes-default']) throw new CommandError('give --default-scope or --all-scopes-default, not both');
    const current = await deps.resources.findResource(uri);
    if (!current) throw notFound(uri);
    let scopes: string[] | undefined;
    if (values.scope || values['add-scope'] || values['remove-scope']) {
      const removed = new Set(splitList(values['remove-scope']));
      scopes = [...new Set([...(values.scope ? splitList(values.scope) : current.scopes), ...splitList(values['add-scope'])])].filter((s) => !removed.has(s));
    }
    const changes = {
      name: values.name,
      scopes,
      accessTokenTtl: ttlOf(values.ttl),
      requireMfa: onOff(values['require-mfa'], 'require-mfa'),
      defaultScopes: values['all-scopes-default'] ? null : values['default-scope'] ? splitList(values['default-scope']) : undefined,
      claims: claimsOf(values.claims),
    };
    const changed = Object.entries(changes).filter(([, v]) => v !== undefined).map(([k]) => k);
    if (changed.length === 0) throw new CommandError('nothing to change: give --name, --scope, --add-scope, --remove-scope, --ttl, --require-mfa, --default-scope or --claims (gatehouse help)');
    const resource = await deps.resources.updateResource(current.uri, changes);
    if (!resource) throw notFound(uri);
    await adminAudit(deps, 'admin.resource.update', resource.uri, { changed, scopes: resource.scopes, default_scopes: resource.defaultScopes, claims: resource.claims });
    return resource;
  },
  async 'resource list'(deps) {
    return deps.resources.listResources();
  },
  async 'resource get'(deps, args) {
    const { values, positionals } = parse(args, { uri: one });
    const uri = uriOf(values, positionals, 'get');
    const found = await deps.resources.findResource(uri);
    if (!found) throw notFound(uri);
    const { hs256Secret: _secret, ...resource } = found; // shown once, at creation
    return resource;
  },
  async 'resource delete'(deps, args) {
    const { values, positionals } = parse(args, { uri: one });
    const uri = uriOf(values, positionals, 'delete');
    if (!(await deps.resources.deleteResource(uri))) throw notFound(uri);
    await adminAudit(deps, 'admin.resource.delete', uri);
    return { deleted: uri };
  },
};

export const resourceCommands: Record<string, Handler> = handlers;

export const RESOURCE_USAGE = [
  '  resource create --uri U [--scope S ...] [--name N] [--ttl SECONDS] [--signing jwks|hs256] [--require-mfa]',
  '                  [--default-scope S ...] [--claims roles,permissions]',
  '  resource update URI [--name N] [--scope S ... (replaces) | --add-scope S | --remove-scope S] [--ttl SECONDS]',
  '                  [--require-mfa on|off] [--default-scope S ... | --all-scopes-default] [--claims roles,permissions|none]',
  '  resource list | resource get URI | resource delete URI | resource require-mfa URI [--off]',
];
