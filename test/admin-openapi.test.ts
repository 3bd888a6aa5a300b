// The admin API's OpenAPI 3.1 document (issue 18): served at /admin/api/openapi.json without a
// token, it names every route the real router has and no route it lacks, each operation is well
// formed, and the answers it documents are what the running API returns.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type Router from '@koa/router';
import { createAdminApi } from '../src/admin/api.ts';
import { ADMIN_OPERATIONS, adminOpenApi } from '../src/admin/openapi.ts';
import { startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const METHODS = ['get', 'put', 'post', 'delete', 'patch'];
type Doc = ReturnType<typeof adminOpenApi>;
type Op = { operationId: string; responses: Record<string, { content?: Record<string, { schema: Record<string, unknown> }> }>; parameters?: { name: string; in: string }[]; requestBody?: unknown; tags: string[] };

/** `METHOD /path/{param}` for every route of the router (HEAD is Koa's shadow of GET). */
function routerOperations(router: Router): string[] {
  return router.stack.flatMap((layer) => layer.methods
    .filter((m) => m !== 'HEAD')
    .map((m) => `${m} ${String(layer.path).replace(/^\/admin\/api/, '').replace(/:(\w+)/g, '{$1}')}`));
}

function documentedOperations(doc: Doc): string[] {
  return Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
}

describe('admin API OpenAPI document', () => {
  // The real router, as app.ts builds it (no request reaches it here, so no store is needed).
  const api = createAdminApi({ config: { ISSUER: 'https://id.example.test' } } as never);
  const doc = adminOpenApi('https://id.example.test', '1');

  it('documents every route of the router, and only those', () => {
    const routes = routerOperations(api.router);
    expect(routes.length).toBeGreaterThan(40);
    expect(new Set(routes).size).toBe(routes.length);
    expect(documentedOperations(doc).sort()).toEqual([...routes].sort());
  });

  it('is a well-formed OpenAPI 3.1 document: ids, parameters, responses and references', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info).toMatchObject({ title: expect.any(String), version: '1' });
    expect(doc.servers).toEqual([{ url: 'https://id.example.test/admin/api' }]);
    const ids = new Set<string>();
    for (const [path, ops] of Object.entries(doc.paths)) {
      expect(path).toMatch(/^\/[a-z0-9/{}._-]*$/);
      for (const [method, raw] of Object.entries(ops)) {
        const op = raw as Op;
        const where = `${method} ${path}`;
        expect(METHODS, where).toContain(method);
        expect(ids.has(op.operationId), `${where}: operationId ${op.operationId} repeats`).toBe(false);
        ids.add(op.operationId);
        // Each {param} of the path is a required path parameter, and no other path parameter exists.
        const inPath = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
        expect((op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name), where).toEqual(inPath);
        const codes = Object.keys(op.responses);
        expect(codes.some((c) => /^2\d\d$/.test(c)), `${where} has a success response`).toBe(true);
        for (const c of codes) expect(c, where).toMatch(/^[1-5]\d\d$/);
        if (method === 'get' || method === 'delete') expect(op.requestBody, where).toBeUndefined();
        if (op.tags[0] !== 'meta') expect(codes, where).toEqual(expect.arrayContaining(['401', '403']));
      }
    }
    // Every $ref points at something in the document.
    const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"#\/([^"]+)"/g)].map((m) => m[1]);
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of refs) {
      const target = ref.split('/').reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], doc);
      expect(target, `#/${ref}`).toBeDefined();
    }
    // Request bodies refuse unknown fields (the API answers 400), as the schemas say.
    const patchUser = (doc.paths['/users/{id}'] as Record<string, any>).patch.requestBody.content['application/json'].schema;
    expect(patchUser).toMatchObject({ type: 'object', additionalProperties: false, properties: { email_verified: { type: 'boolean' } } });
  });

  describe('served by a running Gatehouse', () => {
    let gh: TestGatehouse;
    let token: string;
    const get = async (path: string, auth = true) => {
      const res = await fetch(`${gh.url}/admin/api${path}`, { headers: auth ? { authorization: `Bearer ${token}` } : {} });
      return { status: res.status, type: res.headers.get('content-type'), body: await res.json() };
    };

    beforeAll(async () => {
      gh = await startTestGatehouse();
      const robot = await gh.cli('client', 'create', '--preset', 'mcp-server', '--name', 'docs robot');
      await gh.cli('client', 'admin-api', robot.client_id, '--read');
      const res = await fetch(`${gh.url}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${robot.client_id}:${robot.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', resource: `${gh.url}/admin/api`, scope: 'gatehouse:admin:read' }),
      });
      token = ((await res.json()) as { access_token: string }).access_token;
      await gh.cli('resource', 'create', '--uri', 'https://tools.example.test/mcp', '--scope', 'tools:read');
      await gh.cli('client', 'create', '--preset', 'agent', '--name', 'agent', '--resource', 'https://tools.example.test/mcp');
      await gh.cli('policy', 'role', 'set', 'user', '--room', '{identity}_*', '--publish', '--subscribe');
      await gh.cli('connection', 'create', 'acme', '--issuer', 'https://login.acme.test', '--client-id', 'gh', '--domain', 'acme.test');
    }, 120_000);
    afterAll(async () => gh?.close());

    it('at /admin/api/openapi.json, without a token, for this issuer', async () => {
      const served = await get('/openapi.json', false);
      expect(served.status).toBe(200);
      expect(served.type).toMatch(/^application\/json/);
      expect(served.body).toEqual(JSON.parse(JSON.stringify(adminOpenApi(gh.url, served.body.info.version))));
      expect(served.body.servers).toEqual([{ url: `${gh.url}/admin/api` }]);
    });

    it('documents the answers the API gives (field names and types)', async () => {
      for (const path of ['/users', '/clients', '/resources', '/roles', '/policies/clients', '/policies/roles', '/connections', '/keys', '/audit']) {
        const { status, body } = await get(path);
        expect(status, path).toBe(200);
        if (Array.isArray(body)) expect(body.length, `${path} has something to check`).toBeGreaterThan(0);
        const answer = ADMIN_OPERATIONS[`GET ${path}`].answer!;
        const parsed = answer.safeParse(body);
        expect(parsed.success, `${path}: ${JSON.stringify(parsed.error?.issues?.slice(0, 3))}`).toBe(true);
      }
      const users = await get('/users');
      expect(ADMIN_OPERATIONS['GET /users/{id}'].answer!.safeParse((await get(`/users/${users.body[0].id}`)).body).success).toBe(true);
    });
  });
});
