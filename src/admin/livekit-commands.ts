// CLI commands for LiveKit options per client or per role (src/exchange/livekit-options.ts):
//   livekit options set (--client ID | --role ROLE) [--room-prefix P] [--max-participants N]
//                       [--empty-timeout S] [--departure-timeout S]
//   livekit options get|delete (--client ID | --role ROLE) | livekit options list
// `set` replaces that client's or role's options: what a flag does not give is unset.
import type { Deps } from '../app.ts';
import { createLivekitOptions, InvalidLivekitOptions, type OptionsScope } from '../exchange/livekit-options.ts';
import { adminAudit, CommandError, one, parse, type CommandActor } from './args.ts';

type LivekitCommandDeps = Pick<Deps, 'audit' | 'clients'> & CommandActor;
type Handler = (deps: LivekitCommandDeps, args: string[]) => Promise<unknown>;

function optionsStore(deps: LivekitCommandDeps) {
  const db = (deps as Partial<Pick<Deps, 'db'>>).db;
  if (!db) throw new CommandError('livekit commands need the database');
  return createLivekitOptions(db);
}

function target(values: { client?: string; role?: string }): { scope: OptionsScope; name: string } {
  if (Boolean(values.client) === Boolean(values.role)) throw new CommandError('give exactly one of --client ID or --role ROLE');
  return values.client ? { scope: 'client', name: values.client } : { scope: 'role', name: values.role! };
}

function count(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw new CommandError(`--${what} must be a whole number`);
  return n;
}

const TARGET = { client: one, role: one } as const;

export const livekitCommands: Record<string, Handler> = {
  async 'livekit options'(deps, args) {
    const [verb, ...rest] = args;
    const store = optionsStore(deps);
    if (verb === 'list') return store.list();
    if (verb === 'get' || verb === 'delete') {
      const t = target(parse(rest, TARGET).values);
      if (verb === 'get') {
        const o = await store.get(t.scope, t.name);
        if (!o) throw new CommandError(`no LiveKit options for ${t.scope} ${t.name}`, 404);
        return o;
      }
      if (!(await store.delete(t.scope, t.name))) throw new CommandError(`no LiveKit options for ${t.scope} ${t.name}`, 404);
      await adminAudit(deps, 'admin.livekit.options.delete', t.name, { scope: t.scope });
      return { deleted: t };
    }
    if (verb !== 'set') throw new CommandError('usage: livekit options set|get|delete|list');
    const { values } = parse(rest, { ...TARGET, 'room-prefix': one, 'max-participants': one, 'empty-timeout': one, 'departure-timeout': one });
    const t = target(values);
    if (t.scope === 'client' && !(await deps.clients.findMetadata(t.name))) throw new CommandError(`no client ${t.name}`);
    try {
      const saved = await store.set({
        ...t,
        ...(values['room-prefix'] !== undefined ? { roomPrefix: values['room-prefix'] } : {}),
        ...(values['max-participants'] !== undefined ? { maxParticipants: count(values['max-participants'], 'max-participants') } : {}),
        ...(values['empty-timeout'] !== undefined ? { emptyTimeout: count(values['empty-timeout'], 'empty-timeout') } : {}),
        ...(values['departure-timeout'] !== undefined ? { departureTimeout: count(values['departure-timeout'], 'departure-timeout') } : {}),
      });
      await adminAudit(deps, 'admin.livekit.options.set', t.name, { ...saved });
      return saved;
    } catch (err) {
      if (err instanceof InvalidLivekitOptions) throw new CommandError(err.message);
      throw err;
    }
  },
};

export const LIVEKIT_USAGE = [
  '  livekit options set (--client ID | --role ROLE) [--room-prefix P] [--max-participants N]',
  '                      [--empty-timeout SECONDS] [--departure-timeout SECONDS]   (replaces; docs/livekit.md#options)',
  '  livekit options get|delete (--client ID | --role ROLE) | livekit options list',
];
