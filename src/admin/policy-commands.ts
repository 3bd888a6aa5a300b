// CLI commands for token-exchange policy (migrations/002_exchange_policy.sql):
//   policy client set <client_id> [--livekit] [--resource U ...] [--scope S ...] [--act] [--agent-name N]
//   policy client get|delete <client_id> | policy client list
//   policy role set <role> [--room PATTERN ...] [--publish] [--subscribe] [--data] [--room-admin] [--require-mfa]
//   policy role delete <role> | policy role list
//   policy id-jag set <client_id> --audience ISSUER --target-client-id ID --resource U ... [--scope S ...]
//   policy id-jag delete <client_id> --audience ISSUER | policy id-jag list [<client_id>]
// `set` replaces the whole policy: what a flag does not grant is denied.
import type { Deps } from '../app.ts';
import { createPolicyStore, splitScope } from '../exchange/policy.ts';
import { isLoopbackHttp } from '../federation/connections.ts';
import { adminAudit, CommandError, flag, many, one, parse, splitList, type CommandActor } from './args.ts';

type PolicyCommandDeps = Pick<Deps, 'audit' | 'resources'> & CommandActor;
type PolicyHandler = (deps: PolicyCommandDeps, args: string[]) => Promise<unknown>;

/** The commands run with the full Deps (CLI, control socket); their shared type names only the common part. */
function policyStore(deps: PolicyCommandDeps) {
  const db = (deps as Partial<Pick<Deps, 'db'>>).db;
  if (!db) throw new CommandError('policy commands need the database');
  return createPolicyStore(db);
}

function positional(positionals: string[], what: string) {
  const v = positionals[0];
  if (!v) throw new CommandError(`${what} is required`);
  return v;
}

const record = (deps: PolicyCommandDeps, type: string, subject: string, details: Record<string, unknown> = {}) => adminAudit(deps, type, subject, details);

const handlers: Record<string, PolicyHandler> = {
  async 'policy client'(deps, args) {
    const [verb, ...rest] = args;
    const store = policyStore(deps);
    if (verb === 'list') return store.listClientPolicies();
    if (verb === 'get') {
      const id = positional(parse(rest, {}).positionals, 'client id');
      const p = await store.clientPolicy(id);
      if (!p) throw new CommandError(`no policy for client ${id} (it may exchange nothing)`);
      return p;
    }
    if (verb === 'delete') {
      const id = positional(parse(rest, {}).positionals, 'client id');
      if (!(await store.deleteClientPolicy(id))) throw new CommandError(`no policy for client ${id}`);
      await record(deps, 'admin.policy.client.delete', id);
      return { deleted: id };
    }
    if (verb !== 'set') throw new CommandError(`${verb ? `unknown verb ${verb}; ` : ''}usage: policy client set|get|delete|list`);
    const { values, positionals } = parse(rest, { livekit: flag, resource: many, scope: many, act: flag, 'agent-name': one });
    const clientId = positional(positionals, 'client id');
    const resources: string[] = [];
    for (const uri of splitList(values.resource)) {
      const rs = await deps.resources.findResource(uri);
      if (!rs) throw new CommandError(`resource ${uri} is not registered (gatehouse resource create --uri ...)`);
      resources.push(rs.uri);
    }
    const scopes = values.scope ? splitScope(splitList(values.scope).join(' ')) : null;
    const agentName = values['agent-name'] ?? null;
    if (agentName !== null && !/^[A-Za-z0-9_.:-]{1,256}$/.test(agentName)) throw new CommandError('--agent-name: letters, digits and _ . : -');
    let saved;
    try {
      saved = await store.setClientPolicy({ clientId, livekit: Boolean(values.livekit), resources, scopes, mayAct: Boolean(values.act), agentName });
    } catch (err) {
      const msg = (err as Error).message;
      if (/foreign key/i.test(msg)) throw new CommandError(`no client ${clientId}`);
      if (/unique|duplicate/i.test(msg)) throw new CommandError(`agent name ${agentName} is already used by another client`);
      throw err;
    }
    await record(deps, 'admin.policy.client.set', clientId, { livekit: saved.livekit, resources, scopes, may_act: saved.mayAct, agent_name: agentName });
    return saved;
  },
  async 'policy role'(deps, args) {
    const [verb, ...rest] = args;
    const store = policyStore(deps);
    if (verb === 'list') return store.listRolePolicies();
    if (verb === 'delete') {
      const role = positional(parse(rest, {}).positionals, 'role');
      if (!(await store.deleteRolePolicy(role))) throw new CommandError(`no LiveKit policy for role ${role}`);
      await record(deps, 'admin.policy.role.delete', role);
      return { deleted: role };
    }
    if (verb === 'get') {
      const role = positional(parse(rest, {}).positionals, 'role');
      const p = (await store.listRolePolicies()).find((x) => x.role === role);
      if (!p) throw new CommandError(`no LiveKit policy for role ${role} (its holders join no room through it)`, 404);
      return p;
    }
    if (verb !== 'set') throw new CommandError('usage: policy role set|get|delete|list');
    const { values, positionals } = parse(rest, { room: many, publish: flag, subscribe: flag, data: flag, 'room-admin': flag, 'require-mfa': flag });
    const role = positional(positionals, 'role');
    const roomPatterns = splitList(values.room);
    for (const p of roomPatterns) {
      if (!/^[A-Za-z0-9_.:=@*{}-]+$/.test(p)) throw new CommandError(`room pattern ${p}: letters, digits, _ . : = @ -, * and {identity}/{sub}`);
    }
    const saved = await store.setRolePolicy({
      role, roomPatterns, canPublish: Boolean(values.publish), canSubscribe: Boolean(values.subscribe),
      canPublishData: Boolean(values.data), roomAdmin: Boolean(values['room-admin']), requireMfa: Boolean(values['require-mfa']),
    });
    await record(deps, 'admin.policy.role.set', role, { ...saved });
    return saved;
  },
  /**
   * ID-JAG (docs/id-jag.md): the other authorization servers this client may get an Identity
   * Assertion JWT Authorization Grant for. `set` replaces the client's entry for that audience.
   */
  async 'policy id-jag'(deps, args) {
    const [verb, ...rest] = args;
    const store = policyStore(deps);
    const { values, positionals } = parse(rest, { audience: one, 'target-client-id': one, resource: many, scope: many });
    if (verb === 'list') return store.listIdJagTargets(positionals[0]);
    const clientId = positional(positionals, 'client id');
    const audience = values.audience;
    if (!audience) throw new CommandError("--audience is required (the other authorization server's issuer)");
    if (verb === 'delete') {
      if (!(await store.deleteIdJagTarget(clientId, audience))) throw new CommandError(`no ID-JAG policy for client ${clientId} and ${audience}`);
      await record(deps, 'admin.policy.id_jag.delete', clientId, { audience });
      return { deleted: { client_id: clientId, audience } };
    }
    if (verb !== 'set') throw new CommandError('usage: policy id-jag set|delete|list');
    httpsUrl(audience, '--audience');
    const targetClientId = values['target-client-id'];
    if (!targetClientId) throw new CommandError('--target-client-id is required (the client_id this client has at the other server)');
    const resources = splitList(values.resource);
    if (!resources.length) throw new CommandError('--resource is required (the resource identifier at the other server, e.g. its MCP server)');
    for (const uri of resources) httpsUrl(uri, '--resource');
    const scopes = values.scope ? splitScope(splitList(values.scope).join(' ')) : null;
    let saved;
    try {
      saved = await store.setIdJagTarget({ clientId, audience, targetClientId, resources, scopes });
    } catch (err) {
      if (/foreign key/i.test((err as Error).message)) throw new CommandError(`no client ${clientId}`);
      throw err;
    }
    await record(deps, 'admin.policy.id_jag.set', clientId, { audience, target_client_id: targetClientId, resources, scopes });
    return saved;
  },
};

/** Identifiers at another server: https (http only on this machine, for development). */
function httpsUrl(value: string, option: string) {
  let ok = false;
  try {
    const u = new URL(value);
    ok = (u.protocol === 'https:' || isLoopbackHttp(value)) && !u.hash;
  } catch { /* not a URL */ }
  if (!ok) throw new CommandError(`${option} ${value}: an https:// URL without a fragment (http:// only on a loopback address)`);
}

export const policyCommands: Record<string, PolicyHandler> = handlers;

export const POLICY_USAGE = [
  '  policy client set CLIENT_ID [--livekit] [--resource U ...] [--scope S ...] [--act] [--agent-name N]',
  '  policy client get|delete CLIENT_ID | policy client list',
  '  policy role set ROLE [--room PATTERN ...] [--publish] [--subscribe] [--data] [--room-admin] [--require-mfa]',
  '  policy role get|delete ROLE | policy role list',
  '  policy id-jag set CLIENT_ID --audience ISSUER --target-client-id ID --resource U ... [--scope S ...]',
  '  policy id-jag delete CLIENT_ID --audience ISSUER | policy id-jag list [CLIENT_ID]',
];
