// The manual as a reader meets it: README and docs/ link only inside the repository (to files and
// headings that exist), never to material users do not have, and the configuration reference is
// what the schema renders today.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_PAGE, renderConfigReference } from '../scripts/config-docs.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const pages = ['README.md', ...fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const read = (p: string) => fs.readFileSync(path.join(ROOT, p), 'utf8');
/** Markdown outside code: fenced blocks and inline code do not hold links. */
const prose = (md: string) => md.replace(/^```[\s\S]*?^```$/gm, '').replace(/`[^`\n]*`/g, '');
/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes. */
const slug = (h: string) => h.trim().toLowerCase().replace(/`/g, '').replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
const anchors = (md: string) => new Set([...md.replace(/^```[\s\S]*?^```$/gm, '').matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1])));

describe('README and docs/', () => {
  it('README begins with the two commands', () => {
    const first = /```sh\n([\s\S]*?)```/.exec(read('README.md'))![1].split('\n');
    expect(first[0]).toMatch(/^npm install && npm start\s+#/);
    expect(first[1]).toMatch(/^npm test\s+#/);
  });

  it('every link points at a file and heading inside the repository', () => {
    const bad: string[] = [];
    let checked = 0;
    for (const page of pages) {
      for (const [, target] of prose(read(page)).matchAll(/\]\(([^)\s]+)\)/g)) {
        checked++;
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) { bad.push(`${page}: ${target} leaves the repository`); continue; }
        const [file, anchor] = target.split('#');
        const resolved = file ? path.normalize(path.join(path.dirname(page), file)) : page;
        if (resolved.startsWith('..') || !fs.existsSync(path.join(ROOT, resolved))) { bad.push(`${page}: ${target} (no ${resolved})`); continue; }
        if (anchor && resolved.endsWith('.md') && !anchors(read(resolved)).has(anchor)) bad.push(`${page}: ${target} (no heading #${anchor})`);
      }
    }
    expect(bad).toEqual([]);
    expect(checked).toBeGreaterThan(30);
  });

  it('names nothing users do not have', () => {
    for (const page of pages) expect(read(page), page).not.toMatch(/DESIGN\.md|\.\.\/shared|seeds\//);
  });

  it('calls the CLI as npx gatehouse in shell examples', () => {
    const bare: string[] = [];
    for (const page of pages) {
      for (const [, block] of read(page).matchAll(/^```(?:sh|bash)\n([\s\S]*?)^```$/gm)) {
        for (const line of block.split('\n')) if (/(^|[;&|(]\s*)gatehouse /.test(line) && !/npx gatehouse /.test(line)) bare.push(`${page}: ${line}`);
      }
    }
    expect(bare).toEqual([]);
  });

  it('docs/configuration.md is what the configuration schema renders (npm run docs:config)', () => {
    const page = fs.readFileSync(CONFIG_PAGE, 'utf8');
    expect(page).toBe(renderConfigReference());
    // Every variable of the schema is in it, with its default.
    expect(page).toContain('| `LIVEKIT_TOKEN_TTL` | `900` |');
    expect(page).toContain('| `RATE_LIMIT_LOGIN_ACCOUNT` | `5/15m` |');
    expect(page).toContain('| `REGISTRATION` | `open` |');
  });
});
