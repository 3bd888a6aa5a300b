// Config is parsed once: a bad value stops start-up with a message naming the variable.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config/index.ts';

describe('config', () => {
  it('has working defaults: embedded mode, 15-minute access tokens', () => {
    const c = loadConfig({});
    expect(c.embedded).toBe(true);
    expect(c.ACCESS_TOKEN_TTL).toBe(900);
    expect(c.REFRESH_TOKEN_TTL).toBe(7 * 24 * 3600);
    expect(c.REFRESH_TOKEN_ABSOLUTE_TTL).toBe(30 * 24 * 3600);
    expect(c.ISSUER).toBe('http://127.0.0.1:3000');
    expect(Object.isFrozen(c)).toBe(true);
  });

  it.each([
    ['PORT', 'eighty'],
    ['DATABASE_URL', 'mysql://x'],
    ['REDIS_URL', 'http://x'],
    ['ISSUER', 'not a url'],
    ['ACCESS_TOKEN_TTL', '-5'],
    ['ALLOW_REGISTRATION', 'maybe'],
    ['DATA_ENCRYPTION_KEY', 'short'],
  ])('names %s when its value is bad', (variable, value) => {
    try {
      loadConfig({ [variable]: value });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues.map((i) => i.variable)).toContain(variable);
      expect((err as Error).message).toContain(variable);
    }
  });

  it('takes CORS_ORIGINS as comma-separated origins and names an entry that is not one', () => {
    expect(loadConfig({ CORS_ORIGINS: 'https://app.example.com, http://localhost:5173' }).CORS_ORIGINS)
      .toEqual(['https://app.example.com', 'http://localhost:5173']);
    // Each of these could never equal a browser's Origin header, so CORS would silently fail.
    for (const bad of ['app.example.com', 'https://app.example.com/', 'https://app.example.com/path', 'https://App.example.com']) {
      try {
        loadConfig({ CORS_ORIGINS: `https://ok.example.com,${bad}` });
        expect.unreachable(bad);
      } catch (err) {
        expect((err as ConfigError).issues).toEqual([{ variable: 'CORS_ORIGINS', message: expect.stringContaining(`"${bad}" is not an origin`) }]);
      }
    }
  });

  it('requires the LiveKit variables together and the admin variables together', () => {
    expect(() => loadConfig({ LIVEKIT_URL: 'wss://lk.example.com' })).toThrow(/LIVEKIT/);
    expect(() => loadConfig({ ADMIN_EMAIL: 'a@example.com' })).toThrow(/ADMIN_PASSWORD/);
  });

  it('stops the process with exit code 1 and the variable name', () => {
    const root = path.resolve(import.meta.dirname, '..');
    const r = spawnSync(path.join(root, 'node_modules/.bin/tsx'), ['src/main.ts'], {
      cwd: root, env: { ...process.env, PORT: 'eighty' }, encoding: 'utf8', timeout: 30_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('PORT');
  });
});
