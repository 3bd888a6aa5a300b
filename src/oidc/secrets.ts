// Instance secrets generated once and persisted: the data-encryption key (DEK) and cookie keys.
// DEK: DATA_ENCRYPTION_KEY env wins; embedded mode keeps it in DATA_DIR/secret.key (0600), apart
// from the database; PostgreSQL mode without the env var keeps it in instance_secrets so every
// process agrees (a warning recommends the env var). Cookie keys: COOKIE_KEYS env, else sealed in
// instance_secrets.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/index.ts';
import type { Db } from '../store/db.ts';
import { createSecretBox, type SecretBox } from '../crypto/secretbox.ts';

export interface InstanceSecrets {
  box: SecretBox;
  cookieKeys: string[];
  warnings: string[];
}

/** Insert-if-absent then read, so processes starting together settle on one value. */
async function getOrCreate(db: Db, name: string, make: () => string): Promise<string> {
  await db.query('INSERT INTO instance_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [name, make()]);
  const r = await db.query<{ value: string }>('SELECT value FROM instance_secrets WHERE name = $1', [name]);
  return r.rows[0].value;
}

function fileKey(dir: string): string {
  const file = path.join(dir, 'secret.key');
  fs.mkdirSync(dir, { recursive: true });
  try {
    fs.writeFileSync(file, crypto.randomBytes(32).toString('base64url'), { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return fs.readFileSync(file, 'utf8').trim();
}

export async function loadInstanceSecrets(config: Config, db: Db): Promise<InstanceSecrets> {
  const warnings: string[] = [];
  let dek = config.DATA_ENCRYPTION_KEY;
  if (!dek && config.embedded) dek = fileKey(config.DATA_DIR);
  if (!dek) {
    dek = await getOrCreate(db, 'data_encryption_key', () => crypto.randomBytes(32).toString('base64url'));
    warnings.push('DATA_ENCRYPTION_KEY is not set: the generated key is stored in the database beside what it protects; set DATA_ENCRYPTION_KEY in production.');
  }
  const box = createSecretBox(Buffer.from(dek, 'base64url'));
  let cookieKeys = config.COOKIE_KEYS;
  if (!cookieKeys?.length) {
    const sealed = await getOrCreate(db, 'cookie_keys', () => box.seal(JSON.stringify([crypto.randomBytes(32).toString('base64url')])));
    cookieKeys = JSON.parse(box.open(sealed)) as string[];
  }
  return { box, cookieKeys: [...cookieKeys], warnings };
}
