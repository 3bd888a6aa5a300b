// `gatehouse` and `npm start` run compiled JavaScript (dist/), built on install and rebuilt by
// bin/gatehouse.js whenever src/ is newer: an edit to the sources is what the next command runs,
// several commands started at once on a stale build all run it, a command loads no server code, and
// where dist/ cannot be written the sources run through tsx. Each case works on a copy of the project in a temporary folder.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './helpers/process.ts';

function copyProject(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-build-'));
  for (const p of ['src', 'bin', 'scripts/build.mjs', 'views', 'public', 'migrations', 'package.json']) {
    fs.cpSync(path.join(ROOT, p), path.join(dir, p), { recursive: true });
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

const gatehouse = (dir: string, ...argv: string[]) =>
  new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, ['bin/gatehouse.js', ...argv], { cwd: dir, env: { ...process.env, LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });

/** An edit a reader can see: the CLI prints a line first. */
const edit = (dir: string, line: string) =>
  fs.appendFileSync(path.join(dir, 'src/cli/main.ts'), `\nprocess.stdout.write(${JSON.stringify(`${line}\n`)});\n`);

describe('compiled start', () => {
  let dir: string;
  beforeAll(() => {
    dir = copyProject();
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('builds dist/ on first use and runs it', async () => {
    const r = await gatehouse(dir, '--help');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: gatehouse/);
    expect(fs.existsSync(path.join(dir, 'dist/src/cli/main.js'))).toBe(true);
    // The files read at run time are the project's own, not copies that could go stale.
    expect(fs.realpathSync(path.join(dir, 'dist/views'))).toBe(fs.realpathSync(path.join(dir, 'views')));
  });

  it('runs an edit of the sources on the next command, also when several start at once', async () => {
    edit(dir, 'first edit');
    expect((await gatehouse(dir, '--help')).stdout).toMatch(/^first edit\nusage: gatehouse/);
    edit(dir, 'second edit');
    const all = await Promise.all([1, 2, 3].map(() => gatehouse(dir, '--help')));
    for (const r of all) {
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(/^first edit\nsecond edit\nusage: gatehouse/);
    }
    expect(fs.readFileSync(path.join(dir, 'dist/src/cli/main.js'), 'utf8')).toContain('second edit');
  });

  it('runs a command without loading the server: JSON out, nothing on stderr (no oidc-provider notice)', async () => {
    // Embedded mode with no server running: the CLI opens the database itself (and creates it here).
    const r = await gatehouse(dir, 'client', 'list', '--json');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^\[\]\n$/m); // the last line, after any the edits above print
  });

  it('runs the sources through tsx when dist/ cannot be built, and says so', async () => {
    fs.rmSync(path.join(dir, 'dist'), { recursive: true, force: true });
    fs.writeFileSync(path.join(dir, 'dist'), 'not a folder');
    edit(dir, 'third edit');
    const r = await gatehouse(dir, '--help');
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^gatehouse: cannot build dist\/ .*running the TypeScript sources through tsx\n$/);
    expect(r.stdout).toMatch(/third edit\nusage: gatehouse/);
  });
});
