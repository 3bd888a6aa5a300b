// Boot: config → stores → app → listen; graceful shutdown on SIGTERM/SIGINT.
import { ConfigError } from './config/index.ts';
import { MigrationError } from './store/migrate.ts';
import { UnsafeRedisError } from './revocation/store.ts';
import { startGatehouse } from './server.ts';
import { createLogger } from './http/log.ts';

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let gh;
  try {
    gh = await startGatehouse({ env, controlSocket: true });
  } catch (err) {
    if (err instanceof ConfigError || err instanceof MigrationError || err instanceof UnsafeRedisError) {
      process.stderr.write(`gatehouse: ${err.message}\n`);
      process.exit(1);
    }
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      process.stderr.write(`gatehouse: port ${env.PORT ?? 3000} is in use; set PORT to another port\n`);
      process.exit(1);
    }
    createLogger('error').fatal({ err }, 'start-up failed');
    process.exit(1);
  }
  const log = gh.deps.log;
  for (const w of gh.warnings) log.warn(w);
  if (gh.generatedAdmin) {
    // Printed once, to the terminal only, never through the logger.
    process.stdout.write(
      `\n  First admin created: ${gh.generatedAdmin.email}\n  One-time password:   ${gh.generatedAdmin.password}\n  (shown once; change it at ${gh.url}/account/password)\n\n`,
    );
  }
  log.info({ issuer: gh.url, mode: gh.config.embedded ? 'embedded' : 'postgres', store: gh.deps.kv.kind }, `Gatehouse listening on ${gh.url}`);
  process.stdout.write(`Gatehouse is running at ${gh.url}  (discovery: ${gh.url}/.well-known/openid-configuration)\n`);

  const shutdown = (signal: string) => {
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    gh.stop().then(() => process.exit(0), (err) => {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('src/main.ts')) {
  void main();
}
