// The admin console's tables fit a 1280 px wide screen (issue 18): in Chromium at 1280×800, with
// the long values real deployments have (grant URNs, user ids as actors, audit details, many
// roles), no table needs a horizontal scroll bar and the page itself does not scroll sideways.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from './helpers/chromium.ts';
import { ADMIN, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const DEVICE = 'urn:ietf:params:oauth:grant-type:device_code';

describe('admin console at 1280 px', () => {
  let gh: TestGatehouse;
  let browser: Browser;
  let page: Page;
  let userId: string;

  /** Every table container on the page that is wider inside than it shows, and the page's own overflow. */
  const overflow = () => page.evaluate(() => ({
    tables: [...document.querySelectorAll('table')].map((t) => {
      const box = (t.closest('.table-scroll') ?? t.parentElement) as HTMLElement;
      return { caption: t.querySelector('th')?.textContent ?? '', scroll: box.scrollWidth, client: box.clientWidth, table: t.getBoundingClientRect().width };
    }),
    page: { scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth },
  }));

  beforeAll(async () => {
    // Signs in as ADMIN to look at the console, not to test the admin role's MFA requirement (mfa.test.ts has that).
    gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none' } });
    const roles = ['support-desk', 'billing-readonly', 'tools-operator', 'room-moderator', 'incident-commander', 'data-exporter'];
    for (const r of roles) await gh.cli('role', 'create', r, '--permission', `${r}:read`, '--description', `The ${r} team`);
    const user = await gh.cli('user', 'create', '--email', 'maximiliana.konstantinopoulou-featherstonehaugh@subsidiary.example-corporation.com',
      '--name', 'Maximiliana Konstantinopoulou-Featherstonehaugh', '--password', 'a long password for max', ...roles.flatMap((r) => ['--role', r]));
    userId = user.id;
    await gh.cli('client', 'create', '--name', 'Voice agent for the customer support line (production, EU region)', '--grant', 'client_credentials', '--grant', TX, '--grant', 'urn:openid:params:grant-type:ciba');
    await gh.cli('client', 'create', '--preset', 'device', '--name', 'Kitchen speaker fleet, firmware 4.2 and later');
    await gh.cli('client', 'create', '--preset', 'spa', '--name', 'Web', '--redirect-uri', 'https://app.example.com/callback');
    const scopes = Array.from({ length: 24 }, (_, i) => `tools:capability-number-${i}`);
    await gh.cli('resource', 'create', '--uri', 'https://tools.internal.example-corporation.com/mcp/v2/tenants/eu-west', ...scopes.flatMap((s) => ['--scope', s]));
    await gh.cli('resource', 'update', 'https://tools.internal.example-corporation.com/mcp/v2/tenants/eu-west', '--default-scope', scopes.slice(0, 12).join(','));
    await gh.cli('user', 'update', userId, '--enabled', 'off');
    await gh.cli('user', 'update', userId, '--enabled', 'on');

    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    await page.goto(`${gh.url}/admin/users`);
    await page.getByLabel(/email/i).fill(ADMIN.email);
    await page.getByLabel(/password/i).fill(ADMIN.password);
    await page.getByRole('button', { name: /sign in|log in|continue/i }).click();
    await page.waitForURL(`${gh.url}/admin/users`);
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await gh?.close();
  });

  for (const [name, path] of [['users', '/admin/users'], ['a user', '/admin/users/{id}'], ['clients', '/admin/clients'], ['audit log', '/admin/audit']]) {
    it(`${name}: every table fits`, async () => {
      await page.goto(`${gh.url}${path.replace('{id}', userId)}`);
      const seen = await overflow();
      expect(seen.tables.length, `${path} has tables`).toBeGreaterThan(0);
      for (const t of seen.tables) expect(t.scroll, `${path}: table "${t.caption}" is ${t.scroll}px inside a ${t.client}px box`).toBeLessThanOrEqual(t.client);
      expect(seen.page.scroll, `${path}: the page scrolls sideways`).toBeLessThanOrEqual(seen.page.client);
    });
  }
});
