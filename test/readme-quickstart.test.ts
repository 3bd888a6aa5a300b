// The README's five-minute path, run as a newcomer runs it: its shell blocks, verbatim and in order,
// in one bash session (so variables carry from block to block as in a terminal), against a fresh
// server started the way `npm start` starts it, on the port the README names. The browser approval
// of the device flow is done by Chromium between the blocks, where the README tells the reader to.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium } from 'playwright-core';
import { ROOT, spawnGatehouse, stopProcess } from './helpers/process.ts';
import type { ChildProcess } from 'node:child_process';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
if (!haveChromium && process.env.REQUIRE_SERVICES === '1') throw new Error(`Chromium not found at ${CHROMIUM}`);
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];
const LK = { url: 'ws://127.0.0.1:7880', key: 'devkey', secret: 'a LiveKit API secret of 32+ chars' };

/** The ```sh blocks of the README section "From clone to tokens in five minutes". */
export function quickstartBlocks(readme: string): string[] {
  const section = /^## From clone to tokens in five minutes\n([\s\S]*?)^## /m.exec(readme)?.[1];
  if (!section) throw new Error('README has no quickstart section');
  return [...section.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

/** Pretty-printed JSON values in a transcript (jq and the CLI both start them at column 0). */
const jsonValues = (out: string) => [...out.matchAll(/^[{[][\s\S]*?^[}\]]$/gm)].map((m) => JSON.parse(m[0]));
const decode = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

/** One bash, fed block after block like a terminal; each run returns that block's output. */
class Terminal {
  private out = '';
  private err = '';
  constructor(private readonly sh: ChildProcessWithoutNullStreams) {
    sh.stdout.on('data', (d) => (this.out += d));
    sh.stderr.on('data', (d) => (this.err += d));
  }
  static open(env: Record<string, string>) {
    return new Terminal(spawn('bash', ['--noprofile', '--norc'], { cwd: ROOT, env: { ...process.env, ...env } }));
  }
  async run(block: string): Promise<{ stdout: string; stderr: string; status: number }> {
    this.out = '';
    this.err = '';
    const marker = `__block_done_${Math.random().toString(36).slice(2)}__`;
    this.sh.stdin.write(`${block}\necho "${marker} $?"\n`);
    for (;;) {
      const m = new RegExp(`${marker} (\\d+)\\n`).exec(this.out);
      if (m) return { stdout: this.out.slice(0, m.index), stderr: this.err, status: Number(m[1]) };
      if (this.sh.exitCode !== null) throw new Error(`bash exited: ${this.err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  close() {
    this.sh.stdin.end();
  }
}

const portFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.createServer().once('error', () => resolve(false)).listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });

describe.skipIf(!haveChromium)('README quickstart', () => {
  const blocks = quickstartBlocks(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-readme-'));
  let server: ChildProcess;
  let term: Terminal;
  const steps: { stdout: string; stderr: string; status: number }[] = [];
  const run = async (i: number) => {
    const started = Date.now();
    const r = await term.run(blocks[i]);
    console.log(`README block ${i}: exit ${r.status}, ${Date.now() - started} ms`);
    // The CLI reports failures on stderr as "gatehouse: …"; curl -s prints nothing there.
    expect(r.stderr.split('\n').filter((l) => /^gatehouse:|error/i.test(l))).toEqual([]);
    expect(r.status).toBe(0);
    steps[i] = r;
    return r;
  };

  beforeAll(async () => {
    // The README promises http://127.0.0.1:3000; a server already there would answer instead of ours.
    if (!(await portFree(3000))) throw new Error('port 3000 is in use: the README quickstart test needs it (stop the local `npm start`)');
    ({ proc: server } = await spawnGatehouse({
      PORT: '3000', ISSUER: 'http://127.0.0.1:3000', DATA_DIR: dataDir,
      LIVEKIT_URL: LK.url, LIVEKIT_API_KEY: LK.key, LIVEKIT_API_SECRET: LK.secret,
    }));
    term = Terminal.open({ DATA_DIR: dataDir });
  }, 120_000);
  afterAll(async () => {
    term?.close();
    if (server) await stopProcess(server);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('starts with the two commands, and every block runs as written', async () => {
    expect(blocks.length).toBe(7);
    // Block 0 is what the reader types to start the server; the test started the same `gatehouse serve`.
    expect(blocks[0].split('\n')[0]).toBe('npm install && npm start');

    // 1. MCP resource, agent, client-credentials token for the resource.
    const one = jsonValues((await run(1)).stdout);
    expect(one[0]).toMatchObject({ uri: 'https://mcp.example.com/mcp', scopes: ['tools:read', 'tools:write'] });
    const cc = one.at(-1);
    expect(cc).toMatchObject({ token_type: 'Bearer', scope: 'tools:read', expires_in: 900 });
    expect(decode(cc.access_token)).toMatchObject({ aud: 'https://mcp.example.com/mcp', iss: 'http://127.0.0.1:3000' });

    // 2. User, device client, device authorization; the last line is the URL to open.
    const two = await run(2);
    const [role, alice] = jsonValues(two.stdout);
    expect(role.permissions).toEqual(expect.arrayContaining(['tools:read', 'tools:write']));
    expect(alice).toMatchObject({ email: 'alice@example.com', name: 'Alice' });
    const verifyUrl = two.stdout.trim().split('\n').at(-1)!;
    expect(verifyUrl).toMatch(/^http:\/\/127\.0\.0\.1:3000\/device\?user_code=[A-Z]{4}-[A-Z]{4}$/);

    // The person's part, as the README says it: open, Continue, sign in, allow.
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    try {
      const page = await browser.newPage();
      await page.goto(verifyUrl);
      await page.getByRole('button', { name: /continue/i }).click();
      await page.waitForURL(/\/interaction\//);
      await page.getByLabel(/email/i).fill('alice@example.com');
      await page.getByLabel(/password/i).fill('a long passphrase');
      await page.getByRole('button', { name: /sign in/i }).click();
      await page.waitForLoadState();
      // The consent page names the app, the resource and each scope.
      const consent = await page.locator('body').innerText();
      for (const words of ['speaker', 'https://mcp.example.com/mcp', 'tools:read', 'tools:write']) expect(consent).toContain(words);
      await page.getByRole('button', { name: /allow/i }).click();
      await page.getByText(/device connected/i).first().waitFor();
    } finally {
      await browser.close();
    }

    const three = jsonValues((await run(3)).stdout);
    // Issue 14: without resource= at the token endpoint the device's access token is bound to Gatehouse
    // (exchange and connection-details refuse tokens for a resource server).
    expect(three.at(-1)).toMatchObject({ token_type: 'Bearer', expires_in: 900, scope: 'openid profile offline_access' });

    // 4. LiveKit room token (the README prints the answer without the token itself).
    const four = jsonValues((await run(4)).stdout);
    expect(four[0]).toMatchObject({ livekit: true, resources: ['https://mcp.example.com/mcp'] });
    const lk = four.at(-1);
    expect(lk).toMatchObject({ issued_token_type: 'urn:gatehouse:token-type:livekit', token_type: 'N_A', server_url: LK.url });
    // Never outlives the device's token it came from (issue 14).
    expect(lk.expires_in).toBeLessThanOrEqual(900);
    expect(lk.participant_identity).toMatch(/^user_/);
    expect(lk.room_name.startsWith(`${lk.participant_identity}_`)).toBe(true);

    // 5. The user's MCP token.
    const five = jsonValues((await run(5)).stdout);
    expect(five.at(-1)).toMatchObject({ issued_token_type: 'urn:ietf:params:oauth:token-type:access_token', token_type: 'Bearer', scope: 'tools:read tools:write' });
    expect(five.at(-1).expires_in).toBeLessThanOrEqual(900);

    // 6. Delegation: the agent's token for the user names the agent as actor.
    const six = jsonValues((await run(6)).stdout);
    expect(six[0]).toMatchObject({ agent_name: 'voice-helper', resources: ['https://mcp.example.com/mcp'] });
    expect(six.at(-1)).toEqual({ aud: 'https://mcp.example.com/mcp', act: { sub: six[0].client_id }, scope: 'tools:read tools:write' });
  }, 900_000);
});
