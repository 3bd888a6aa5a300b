// Crash safety (issue 15) on the embedded store, Gatehouse as its own process: SIGKILL in the middle
// of a stream of writes loses nothing that was acknowledged (every client registration answered 201
// is stored after a restart, with its audit row); SIGTERM drains (a request in flight is answered, an
// idle keep-alive connection does not hold the exit, the process exits 0).
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { spawnGatehouse } from './helpers/process.ts';
import { createPgliteDb } from '../src/store/db.ts';

const dirs: string[] = [];
const dataDir = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-crash-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const exited = (p: import('node:child_process').ChildProcess) =>
  new Promise<{ code: number | null; signal: string | null }>((r) => {
    if (p.exitCode !== null || p.signalCode !== null) return r({ code: p.exitCode, signal: p.signalCode });
    p.once('exit', (code, signal) => r({ code, signal }));
  });

describe('crash safety', () => {
  it('SIGKILL during a stream of writes loses nothing acknowledged; SIGTERM answers the request in flight, does not wait for idle keep-alive connections and exits 0', { timeout: 240_000 }, async () => {
    const env = { DATA_DIR: dataDir(), RATE_LIMITS: 'off', REGISTRATION: 'open' };
    let { url, proc } = await spawnGatehouse(env);
    // Four writers register clients (RFC 7591: each a client row and an audit row); the process is
    // killed once 12 registrations are acknowledged, with writes still in flight.
    const acknowledged: string[] = [];
    let tried = 0;
    const writer = async () => {
      while (proc.signalCode === null) {
        tried++;
        try {
          const r = await fetch(`${url}/reg`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ redirect_uris: ['http://127.0.0.1:8976/callback'], client_name: `crash ${tried}` }) });
          if (r.status === 201) acknowledged.push(((await r.json()) as { client_id: string }).client_id);
          if (acknowledged.length >= 12 && proc.signalCode === null) proc.kill('SIGKILL');
        } catch {
          return; // the connection died with the process
        }
      }
    };
    await Promise.all([0, 1, 2, 3].map(writer));
    await exited(proc);

    ({ url, proc } = await spawnGatehouse(env));
    const { port } = new URL(url);
    const agent = new http.Agent({ keepAlive: true });
    // An idle keep-alive connection, left open.
    await new Promise<void>((resolve, reject) => http.get({ port, host: '127.0.0.1', path: '/health', agent }, (res) => { res.resume(); res.on('end', resolve); }).on('error', reject));
    // A request in flight: its body arrives in two halves, SIGTERM in between.
    const body = 'grant_type=client_credentials&client_id=nobody&client_secret=nothing';
    const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request({ port, host: '127.0.0.1', path: '/token', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, text }));
      });
      req.on('error', reject);
      req.write(body.slice(0, 20));
      setTimeout(() => {
        proc.kill('SIGTERM');
        setTimeout(() => req.end(body.slice(20)), 300);
      }, 100);
    });
    const t0 = Date.now();
    const res = await answer;
    const exit = await exited(proc);
    agent.destroy();
    console.log(`SIGTERM: in-flight request answered ${res.status}, process exited ${exit.code} ${Date.now() - t0} ms after`);
    expect(res.status).toBe(401);
    expect(JSON.parse(res.text).error).toBe('invalid_client');
    expect(exit).toEqual({ code: 0, signal: null });

    // The data directory as the restarted process left it.
    const db = await createPgliteDb(env.DATA_DIR);
    try {
      const clients = new Set((await db.query<{ client_id: string }>("SELECT client_id FROM clients WHERE origin <> 'cli'")).rows.map((r) => r.client_id));
      const audited = new Set((await db.query<{ client_id: string }>("SELECT client_id FROM audit_events WHERE type = 'client.register' AND outcome = 'success'")).rows.map((r) => r.client_id));
      console.log(`SIGKILL: ${tried} registrations tried, ${acknowledged.length} acknowledged before the kill, ${clients.size} stored, ${audited.size} audited`);
      expect(acknowledged.filter((id) => !clients.has(id))).toEqual([]);
      expect(acknowledged.filter((id) => !audited.has(id))).toEqual([]);
    } finally {
      await db.close();
    }
  });
});
