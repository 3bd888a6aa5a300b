// `gatehouse user import` (issue 18): users from a home-grown set-up keep their ids (as `sub`),
// their e-mail verification, names, roles and passwords. Every hash kind such a set-up has — bcrypt
// ($2a/$2b/$2y), argon2id/argon2i, scrypt and PBKDF2 in passlib's, Django's and werkzeug's
// encodings — is made here with a real implementation, imported, and signed in with through the
// login page; the first sign-in replaces it with argon2id (once, even for two sign-ins at once).
// Also: a wrong password is refused and counts toward the lockout, a dry run writes nothing, a rerun
// is idempotent, refused lines are reported without their content, the admin API takes the same file.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import argon2 from 'argon2';
import bcrypt from 'bcryptjs';
import { Browser, CALLBACK, codeFlow, describeEachMode, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { runUserImport } from '../src/admin/import-command.ts';
import { ARGON2_PARAMS } from '../src/accounts/passwords.ts';
import { runCli, spawnGatehouse, stopProcess } from './helpers/process.ts';

// Short passwords, as home-grown set-ups allowed: a sign-in checks the hash, not today's policy.
const PASSWORD = (kind: string) => `pw-${kind}-9`;

// The encodings of each library, written as each library writes them.
const ab64 = (b: Buffer) => b.toString('base64').replace(/=+$/, '').replace(/\+/g, '.'); // passlib's adapted base64
const b64 = (b: Buffer) => b.toString('base64');
const nopad = (b: Buffer) => b.toString('base64').replace(/=+$/, '');
const textSalt = () => crypto.randomBytes(12).toString('base64url').replace(/[-_]/g, 'x');

async function hashesFor(): Promise<Record<string, string>> {
  const pbkdf2 = (pw: string, salt: Buffer | string, n: number, len: number, digest: string) => crypto.pbkdf2Sync(pw, salt, n, len, digest);
  const scrypt = (pw: string, salt: Buffer | string, N: number, len: number) => crypto.scryptSync(pw, salt, len, { N, r: 8, p: 1, maxmem: 256 * 1024 * 1024 });
  const saltBytes = crypto.randomBytes(16);
  const django = textSalt();
  const wz = textSalt();
  const wzs = textSalt();
  const phcSalt = crypto.randomBytes(16);
  const bcrypt2b = await bcrypt.hash(PASSWORD('bcrypt-2b'), 4);
  return {
    'bcrypt-2b': bcrypt2b,
    // $2a$ (older libraries) and $2y$ (PHP) are the same algorithm under another prefix.
    'bcrypt-2a': (await bcrypt.hash(PASSWORD('bcrypt-2a'), 5)).replace(/^\$2b\$/, '$2a$'),
    'bcrypt-2y': (await bcrypt.hash(PASSWORD('bcrypt-2y'), 4)).replace(/^\$2b\$/, '$2y$'),
    // argon2-cffi's defaults (m=64 MiB, t=3, p=4), not Gatehouse's.
    argon2id: await argon2.hash(PASSWORD('argon2id'), { type: argon2.argon2id, memoryCost: 65536, timeCost: 3, parallelism: 4 }),
    argon2i: await argon2.hash(PASSWORD('argon2i'), { type: argon2.argon2i, memoryCost: 4096, timeCost: 3, parallelism: 1 }),
    'passlib-pbkdf2-sha256': `$pbkdf2-sha256$29000$${ab64(saltBytes)}$${ab64(pbkdf2(PASSWORD('passlib-pbkdf2-sha256'), saltBytes, 29000, 32, 'sha256'))}`,
    'django-pbkdf2-sha256': `pbkdf2_sha256$20000$${django}$${b64(pbkdf2(PASSWORD('django-pbkdf2-sha256'), django, 20000, 32, 'sha256'))}`,
    'werkzeug-pbkdf2-sha256': `pbkdf2:sha256:20000$${wz}$${pbkdf2(PASSWORD('werkzeug-pbkdf2-sha256'), wz, 20000, 32, 'sha256').toString('hex')}`,
    'phc-scrypt': `$scrypt$ln=14,r=8,p=1$${nopad(phcSalt)}$${nopad(scrypt(PASSWORD('phc-scrypt'), phcSalt, 2 ** 14, 32))}`,
    'werkzeug-scrypt': `scrypt:16384:8:1$${wzs}$${scrypt(PASSWORD('werkzeug-scrypt'), wzs, 16384, 64).toString('hex')}`,
  };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-import-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describeEachMode('user import', (mode) => {
  let gh: TestGatehouse;
  let config: oidc.Configuration;
  let hashes: Record<string, string>;
  let file: string;
  const kinds = () => Object.keys(hashes);
  const idOf = (kind: string) => `legacy-${kind}`;
  const emailOf = (kind: string) => `${kind}@old.example`;
  const importFile = (f: string, ...flags: string[]) => runUserImport(gh.deps, [f, ...flags], fs.createReadStream(f));
  const count = async (sql: string, params: unknown[] = []) => Number((await gh.deps.db.query<{ n: number }>(sql, params)).rows[0].n);
  const storedHash = async (id: string) => (await gh.deps.db.query<{ password_hash: string }>('SELECT password_hash FROM users WHERE id = $1', [id])).rows[0].password_hash;
  const signIn = (kind: string, password = PASSWORD(kind), browser = new Browser()) =>
    codeFlow(gh, config, { scope: 'openid email profile roles', creds: { email: emailOf(kind), password }, browser });

  beforeAll(async () => {
    gh = await startTestGatehouse({
      mode,
      env: {
        // The lockout counts three guesses here (the default is five): the suite makes three.
        RATE_LIMIT_LOGIN_ACCOUNT: '3/15m',
        // Every sign-in of this suite (two per hash kind, and more) comes from one IP within a minute.
        RATE_LIMIT_LOGIN_IP: 'off',
      },
    });
    const client = await gh.cli('client', 'create', '--name', 'Old app', '--redirect-uri', CALLBACK, '--first-party');
    config = await rpConfig(gh, client.client_id, client.client_secret);
    await gh.cli('role', 'create', 'customer', '--permission', 'livekit:join');
    hashes = await hashesFor();
    const lines = kinds().map((kind, i) => JSON.stringify({
      id: idOf(kind), email: emailOf(kind), email_verified: i % 2 === 0, name: `Old ${kind}`,
      roles: ['user', 'customer'], password_hash: hashes[kind],
    }));
    // Refused lines, each for its own reason, between the good ones.
    lines.splice(2, 0, '{"id": "x", "email": "not-an-address", "password_hash": "$2b$04$abc"}');
    lines.splice(4, 0, JSON.stringify({ id: 'md5-user', email: 'md5@old.example', password_hash: '5f4dcc3b5aa765d61d8327deb882cf99' }));
    lines.splice(5, 0, 'this is not json {');
    lines.splice(6, 0, JSON.stringify({ id: 'spelled', email: 'BCRYPT-2B@old.example', password_hash: hashes['bcrypt-2b'] }));
    lines.push(JSON.stringify({ id: 'roleless', email: 'role@old.example', roles: ['nope'] }));
    lines.push(JSON.stringify({ id: 'bad id!', email: 'badid@old.example' }));
    lines.push(JSON.stringify({ id: 42, email: 'fortytwo@old.example', full_name: 'Typo' }));
    file = path.join(tmp, `users-${mode}.jsonl`);
    fs.writeFileSync(file, `${lines.join('\n')}\n`);
  });
  afterAll(async () => gh?.close());

  it('a dry run reports what would happen and writes nothing', async () => {
    const users = await count('SELECT count(*)::int AS n FROM users');
    const report = await importFile(file, '--dry-run');
    expect(report).toMatchObject({ dry_run: true, created: kinds().length, refused: 7, updated: 0, unchanged: 0 });
    expect(await count('SELECT count(*)::int AS n FROM users')).toBe(users);
    expect(await count('SELECT count(*)::int AS n FROM user_imports')).toBe(0);
    expect(await count("SELECT count(*)::int AS n FROM audit_events WHERE type = 'admin.user.import'")).toBe(0);
  });

  it('imports every hash kind with its id, verification, name and roles; refused lines are reported by line and reason', async () => {
    const report = await importFile(file);
    expect(report).toMatchObject({ dry_run: false, created: kinds().length, refused: 7 });
    expect(report.refusals).toEqual([
      { line: 3, id: 'x', reason: 'email is not an address' },
      { line: 5, id: 'md5-user', reason: expect.stringMatching(/^password_hash: unknown password hash format/) },
      { line: 6, reason: 'not valid JSON' },
      { line: 7, id: 'spelled', reason: 'line 1 has the same address (once normalised)' },
      { line: 15, id: 'roleless', reason: expect.stringMatching(/^unknown role nope/) },
      { line: 16, reason: expect.stringMatching(/^id must be/) },
      { line: 17, id: '42', reason: expect.stringMatching(/^unknown field full_name/) },
    ]);
    // The report names no hash and no line content.
    const text = JSON.stringify(report);
    for (const h of [...Object.values(hashes), '5f4dcc3b5aa765d61d8327deb882cf99', '$2b$04$abc']) expect(text).not.toContain(h);

    const { rows } = await gh.deps.db.query<{ id: string; email: string; name: string; email_verified: boolean; roles: string[]; password_hash: string }>(
      "SELECT id, email, name, email_verified, password_hash, ARRAY(SELECT role FROM user_roles WHERE user_id = u.id ORDER BY role) AS roles FROM users u WHERE id LIKE 'legacy-%' ORDER BY id",
    );
    expect(rows.map((r) => r.id)).toEqual(kinds().map(idOf).sort());
    for (const [i, kind] of kinds().entries()) {
      const row = rows.find((r) => r.id === idOf(kind))!;
      expect(row).toMatchObject({ email: emailOf(kind), name: `Old ${kind}`, email_verified: i % 2 === 0, roles: ['customer', 'user'] });
      expect(row.password_hash).toBe(hashes[kind]);
    }
    const audit = (await gh.deps.db.query<{ details: Record<string, unknown>; actor: string }>("SELECT actor, details FROM audit_events WHERE type = 'admin.user.import'")).rows;
    expect(audit).toEqual([{ actor: 'cli', details: { format: 'jsonl', update: false, lines: kinds().length + 7, created: kinds().length, updated: 0, unchanged: 0, differs: 0, refused: 7 } }]);
  });

  it('each imported password signs in through the login page as the old id; the first sign-in rehashes it to argon2id, and the next still works', async () => {
    for (const [i, kind] of kinds().entries()) {
      if (kind === 'bcrypt-2y') continue; // the parallel test below signs in first
      const { tokens } = await signIn(kind);
      expect(tokens.claims(), kind).toMatchObject({ sub: idOf(kind), email: emailOf(kind), email_verified: i % 2 === 0, name: `Old ${kind}`, roles: ['customer', 'user'] });
      const rehashed = await storedHash(idOf(kind));
      expect(rehashed, kind).toMatch(/^\$argon2id\$/);
      expect(argon2.needsRehash(rehashed, ARGON2_PARAMS), kind).toBe(false);
      expect((await signIn(kind)).tokens.claims()!.sub, kind).toBe(idOf(kind));
      expect(await storedHash(idOf(kind)), `${kind}: the second sign-in keeps the hash`).toBe(rehashed);
    }
  });

  it('two first sign-ins at once both succeed; the hash becomes argon2id once', async () => {
    const kind = 'bcrypt-2y';
    expect(await storedHash(idOf(kind))).toBe(hashes[kind]);
    const both = await Promise.all([signIn(kind), signIn(kind)]);
    for (const { tokens } of both) expect(tokens.claims()!.sub).toBe(idOf(kind));
    expect(await storedHash(idOf(kind))).toMatch(/^\$argon2id\$/);
    expect(await count("SELECT count(*)::int AS n FROM audit_events WHERE type = 'account.password_rehash' AND subject = $1", [idOf(kind)])).toBe(1);
  });

  it('a wrong password is refused, leaves the imported hash, and counts toward the lockout', async () => {
    const one = path.join(tmp, `locked-${mode}.jsonl`);
    fs.writeFileSync(one, JSON.stringify({ id: 'locked-1', email: 'locked@old.example', password_hash: await bcrypt.hash('right-password', 4) }));
    expect(await importFile(one)).toMatchObject({ created: 1 });
    const browser = new Browser();
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256' });
    let page = (await browser.follow(url.href, gh.url)).html!;
    const attempt = async (password: string) => {
      const { action, fields } = formOf(page, '/login');
      const step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, email: 'locked@old.example', password } });
      if (step.html) page = step.html;
      return step.html === undefined ? 'signed in' : step.res.status;
    };
    const before = await storedHash('locked-1');
    for (let i = 0; i < 3; i++) expect(await attempt('wrong-password')).toBe(401);
    expect(await storedHash('locked-1')).toBe(before);
    expect(await attempt('right-password')).toBe(429);
  });

  it('a rerun of the same file changes nothing, even after the sign-ins replaced the hashes', async () => {
    const users = await count('SELECT count(*)::int AS n FROM users');
    const report = await importFile(file);
    expect(report).toMatchObject({ created: 0, updated: 0, differs: 0, unchanged: kinds().length, refused: 7 });
    expect(await count('SELECT count(*)::int AS n FROM users')).toBe(users);
    for (const kind of kinds()) expect(await storedHash(idOf(kind))).toMatch(/^\$argon2id\$/);
  });

  it('a line that differs is reported, applied only with --update, and then unchanged', async () => {
    const csv = path.join(tmp, `changed-${mode}.csv`);
    // CSV as PostgreSQL's COPY writes it: t/f booleans, fields with a comma quoted (names, argon2's
    // parameters), roles space-separated.
    fs.writeFileSync(csv, [
      'id,email,email_verified,name,roles,password_hash',
      `${idOf('argon2i')},${emailOf('argon2i')},f,"Renamed, Argon",user customer,"${hashes.argon2i}"`,
      `csv-new,new@old.example,f,New,,${hashes['bcrypt-2b']}`,
      'csv-broken,short@old.example,f',
    ].join('\n'));
    const first = await importFile(csv);
    expect(first).toMatchObject({ created: 1, differs: 1, updated: 0, refused: 1 });
    expect(first.changes).toEqual([{ line: 2, id: idOf('argon2i'), outcome: 'differs', fields: ['name', 'email_verified'] }]);
    expect(first.refusals).toEqual([{ line: 4, reason: 'the line has 3 fields, the header 6' }]);
    expect((await gh.deps.accounts.findUserById(idOf('argon2i')))!.name).toBe('Old argon2i');

    const dry = await importFile(csv, '--update', '--dry-run');
    expect(dry).toMatchObject({ updated: 1, unchanged: 1 });
    expect((await gh.deps.accounts.findUserById(idOf('argon2i')))!.name).toBe('Old argon2i');

    expect(await importFile(csv, '--update')).toMatchObject({ updated: 1, unchanged: 1, created: 0 });
    expect(await gh.deps.accounts.findUserById(idOf('argon2i'))).toMatchObject({ name: 'Renamed, Argon', emailVerified: false });
    // Its password (rehashed at sign-in) is what it was: the file's hash is the one imported.
    expect((await signIn('argon2i')).tokens.claims()!.name).toBe('Renamed, Argon');
    expect(await importFile(csv, '--update')).toMatchObject({ updated: 0, unchanged: 2 });

    // An unclosed quote swallows the rest of the file: the report says where reading stopped.
    const cut = path.join(tmp, `cut-${mode}.csv`);
    fs.writeFileSync(cut, 'id,email\ncut-1,cut1@old.example\n"cut-2,cut2@old.example\ncut-3,cut3@old.example\n');
    expect(await importFile(cut)).toMatchObject({ lines: 1, created: 1, stopped: { line: 3, reason: 'a quoted CSV field is not closed' } });
  });

  it('the admin API takes the same file as its body', async () => {
    const robot = await gh.cli('client', 'create', '--name', 'migration robot', '--grant', 'client_credentials');
    await gh.cli('client', 'admin-api', robot.client_id, '--full');
    const api = `${gh.url}/admin/api`;
    const tokenRes = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${robot.client_id}:${robot.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: api, scope: 'gatehouse:admin' }),
    });
    const { access_token } = await tokenRes.json() as { access_token: string };
    const post = (body: string, type: string, query = '') => fetch(`${api}/users/import${query}`, { method: 'POST', headers: { authorization: `Bearer ${access_token}`, 'content-type': type }, body });
    const line = JSON.stringify({ id: 'api-1', email: 'api@old.example', password_hash: hashes['django-pbkdf2-sha256'] });

    const dry = await post(line, 'application/x-ndjson', '?dry_run=true');
    expect(dry.status).toBe(200);
    expect(await dry.json()).toMatchObject({ dry_run: true, created: 1 });
    expect(await gh.deps.accounts.findUserById('api-1')).toBeUndefined();

    const real = await post(line, 'application/x-ndjson');
    expect(await real.json()).toMatchObject({ created: 1 });
    expect((await gh.deps.db.query("SELECT actor FROM audit_events WHERE type = 'admin.user.import' ORDER BY id DESC LIMIT 1")).rows[0]).toEqual({ actor: `client:${robot.client_id}` });
    expect(await (await post(line, 'application/x-ndjson')).json()).toMatchObject({ unchanged: 1 });

    const badHeader = await post('id,mail\n1,a@b.c\n', 'text/csv');
    expect(badHeader.status).toBe(400);
    expect(await badHeader.json()).toEqual({ error: 'invalid_request', error_description: expect.stringMatching(/^unknown CSV column mail/) });
    const noType = await post(line, 'text/plain');
    expect(noType.status).toBe(415);

    // Hostile lines are refused one by one, never a 500: NUL and controls (as JSON escapes and raw),
    // an unpaired surrogate, invalid UTF-8, a 100 kB line, deep nesting, the wrong types.
    const hostile = Buffer.concat([
      Buffer.from([
        JSON.stringify({ email: 'nul\u0000@old.example' }), JSON.stringify({ email: 'n@old.example', name: 'a\u0000b' }),
        JSON.stringify({ email: 'c@old.example', name: '\u001b[31m' }), '{"email": "s@old.example", "name": "\\ud800"}',
        JSON.stringify({ email: 'r@old.example', roles: ['user\u0000'] }), JSON.stringify({ email: 'x'.repeat(100_000) }),
        '['.repeat(40) + ']'.repeat(40), JSON.stringify({ email: ['a@b.c'] }), JSON.stringify({ email: 'h@old.example', password_hash: { $2b: 1 } }),
        JSON.stringify({ id: 1e300, email: 'big@old.example' }), '', '', // then a blank line
      ].join('\n')),
      Buffer.from([0x7b, 0x22, 0x65, 0x6d, 0x61, 0x69, 0x6c, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x40, 0x6f, 0x2e, 0x65, 0x22, 0x7d, 0x0a]), // {"email":"\xc3(@o.e"}
    ]);
    const res = await fetch(`${api}/users/import`, { method: 'POST', headers: { authorization: `Bearer ${access_token}`, 'content-type': 'application/x-ndjson' }, body: hostile });
    expect(res.status).toBe(200);
    const report = await res.json() as { created: number; refused: number; refusals: { line: number; reason: string }[] };
    expect(report).toMatchObject({ created: 0, refused: 11 });
    expect(report.refusals.map((r) => r.line)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]);
  });
});

describe('npx gatehouse user import, beside a running embedded server', () => {
  it('streams a file far larger than a command to the server over the control socket', async () => {
    const dataDir = fs.mkdtempSync(path.join(tmp, 'data-'));
    const server = await spawnGatehouse({ DATA_DIR: dataDir });
    try {
      // 800 users, ~100 kB: more than the control socket takes as a command (64 kB).
      const big = path.join(tmp, 'many.jsonl');
      const hash = await bcrypt.hash('many-users-password', 4);
      fs.writeFileSync(big, Array.from({ length: 800 }, (_, i) => JSON.stringify({ id: `u${i}`, email: `user${i}@many.example`, name: `User ${i}`, password_hash: hash })).join('\n'));
      expect(fs.statSync(big).size).toBeGreaterThan(90_000);
      const env = { DATA_DIR: dataDir };
      // The server holds the data directory; the CLI reaches it through its socket.
      expect(fs.existsSync(path.join(dataDir, 'control.sock'))).toBe(true);
      expect(runCli(env, 'user', 'import', big, '--dry-run')).toMatchObject({ dry_run: true, lines: 800, created: 800 });
      expect(runCli(env, 'user', 'import', big)).toMatchObject({ dry_run: false, lines: 800, created: 800, refused: 0 });
      expect(runCli(env, 'user', 'get', '--id', 'u799', '--json')).toMatchObject({ id: 'u799', email: 'user799@many.example', name: 'User 799' });
    } finally {
      await stopProcess(server.proc);
    }
  }, 120_000); // a server and three CLI processes start
});
