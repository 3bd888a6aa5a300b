// `gatehouse` command line. Commands print JSON. In embedded mode, when a server is running on the
// same DATA_DIR, the command is sent to it over the control socket (PGlite is single-process);
// otherwise the CLI opens the database itself (PostgreSQL, or PGlite when no server runs).
//
// Start-up time is the CLI's: a command loads only what it needs. The modules imported at the top
// are light (no database driver, no oidc-provider, no Koa); the store, the migrations and the
// service layer (`assemble`) are imported where a command needs them, and the server only by `serve`.
import fs from 'node:fs';
import { loadConfig, ConfigError } from '../config/index.ts';
import { CommandError, runCommand, usage, usageOf } from '../admin/commands.ts';
import { sendControlCommand, sendControlImport } from '../admin/control.ts';
import { exitCodeFor, formatOutput } from '../admin/output.ts';

function fail(message: string, code = 1): never {
  process.stderr.write(`gatehouse: ${message}\n`);
  process.exit(code);
}

/** `--jwks @file` (client create): the file is read here, by the operator's process, and sent as text. */
export function readFileArguments(argv: string[]): string[] {
  return argv.map((arg, i) => {
    const inline = /^--jwks=@(.+)$/.exec(arg);
    const path = inline?.[1] ?? (argv[i - 1] === '--jwks' && arg.startsWith('@') ? arg.slice(1) : undefined);
    if (path === undefined) return arg;
    let text: string;
    try {
      text = fs.readFileSync(path, 'utf8');
    } catch (err) {
      fail(`--jwks: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 2);
    }
    return inline ? `--jwks=${text}` : text;
  });
}

export async function cli(rawArgv: string[]): Promise<void> {
  // --json (any command): JSON instead of the table `get` and `list` print (src/admin/output.ts).
  const json = rawArgv.includes('--json');
  const argv = readFileArguments(rawArgv.filter((a) => a !== '--json'));
  const print = (result: unknown) => process.stdout.write(`${formatOutput(argv, JSON.parse(JSON.stringify(result ?? null)), json)}\n`);
  const [cmd] = argv;
  if (!cmd || cmd === 'serve' || cmd === 'start') {
    const { main } = await import('../main.ts');
    return main();
  }
  if (cmd === 'help' || cmd === '--help' || cmd === '-h') {
    // `gatehouse help client create`: that command's lines; otherwise everything.
    const lines = argv.length > 1 ? usageOf(argv.slice(1).join(' ')) : [];
    process.stdout.write(`${lines.length ? lines.join('\n') : usage()}\n`);
    return;
  }
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  if (cmd === 'user' && argv[1] === 'import') return importFile(config, argv.slice(2));

  if (config.embedded) {
    const forwarded = await sendControlCommand(config.DATA_DIR, argv);
    if (forwarded) {
      if (forwarded.status !== 200) fail(forwarded.body.error ?? `server answered ${forwarded.status}`, exitCodeFor(forwarded.status));
      print(forwarded.body.result);
      return;
    }
  }

  if (cmd === 'migrate') {
    const [{ createPgDb, createPgliteDb }, { migrate, MigrationError }] = await Promise.all([import('../store/db.ts'), import('../store/migrate.ts')]);
    const db = config.DATABASE_URL ? createPgDb(config.DATABASE_URL) : await createPgliteDb(config.DATA_DIR);
    try {
      const applied = await migrate(db);
      process.stdout.write(`${JSON.stringify({ applied }, null, 2)}\n`);
    } catch (err) {
      fail(err instanceof MigrationError ? err.message : String(err));
    } finally {
      await db.close();
    }
    return;
  }

  const deps = await openDeps(config);
  try {
    print(await runCommand(deps, argv));
  } catch (err) {
    if (err instanceof CommandError) fail(err.message, exitCodeFor(err.status));
    throw err;
  } finally {
    await deps.close();
  }
}

/** The service layer, for a command this process runs itself: no HTTP app, no oidc-provider (src/deps.ts). */
async function openDeps(config: ReturnType<typeof loadConfig>) {
  const [{ assemble }, { createLogger }] = await Promise.all([import('../deps.ts'), import('../http/log.ts')]);
  return assemble(config, createLogger(process.env.LOG_LEVEL ?? 'warn', process.stderr));
}

/** `user import FILE`: this process reads FILE and streams it to the import (src/admin/import-command.ts). */
async function importFile(config: ReturnType<typeof loadConfig>, args: string[]) {
  const { importArguments, runUserImport } = await import('../admin/import-command.ts');
  let file: string | undefined;
  try {
    file = importArguments(args).file;
  } catch (err) {
    if (err instanceof CommandError) fail(err.message, 2);
    throw err;
  }
  if (!file) fail('usage: gatehouse user import FILE [--format jsonl|csv] [--dry-run] [--update]', 2);
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch (err) {
    fail(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 2);
  }
  const open = () => fs.createReadStream(file);
  const print = (result: unknown) => {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  };
  if (config.embedded) {
    const forwarded = await sendControlImport(config.DATA_DIR, args, open);
    if (forwarded) {
      if (forwarded.status !== 200) fail(forwarded.body.error ?? `server answered ${forwarded.status}`, 2);
      return print(forwarded.body.result);
    }
  }
  const deps = await openDeps(config);
  try {
    print(await runUserImport(deps, args, open()));
  } catch (err) {
    if (err instanceof CommandError) fail(err.message, 2);
    throw err;
  } finally {
    await deps.close();
  }
}

if (process.argv[1]?.endsWith('cli/main.ts')) {
  cli(process.argv.slice(2)).catch((err) => fail((err as Error).stack ?? String(err)));
}
