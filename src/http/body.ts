// Body readers for the routes we answer ourselves or inspect before oidc-provider does. Each has a
// tight cap, so a slow or huge upload cannot tie up the process; chunked bodies declare no length,
// so the cap is counted as the bytes arrive.
import type { Context } from 'koa';
import { InvalidRequest, PayloadTooLarge, UnsupportedMediaType } from './errors.ts';

export const FORM_LIMIT_BYTES = 16 * 1024;

/** Read the raw request body as UTF-8 text. 413 past `limitBytes`, declared or counted. */
export async function readRawBody(ctx: Context, limitBytes: number): Promise<string> {
  // Already read (and checked) at the edge by src/http/input.ts, or rewritten by a pre-reader.
  const read = (ctx.req as unknown as { body?: unknown }).body;
  if (typeof read === 'string') {
    if (Buffer.byteLength(read) > limitBytes) throw new PayloadTooLarge(`request body exceeds ${limitBytes} bytes`);
    return read;
  }
  return (await readBodyBytes(ctx, limitBytes)).toString('utf8');
}

/** The request body's bytes from the stream. 413 past `limitBytes`, declared or counted. */
export async function readBodyBytes(ctx: Context, limitBytes: number): Promise<Buffer> {
  const declared = Number(ctx.get('content-length') || 0);
  if (declared > limitBytes) throw new PayloadTooLarge(`request body exceeds ${limitBytes} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limitBytes) throw new PayloadTooLarge(`request body exceeds ${limitBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Read an application/x-www-form-urlencoded body. 415 for another content type, 413 past the limit. */
export async function readForm(ctx: Context, limitBytes = FORM_LIMIT_BYTES): Promise<URLSearchParams> {
  if (!ctx.is('application/x-www-form-urlencoded')) {
    throw new UnsupportedMediaType('expected application/x-www-form-urlencoded');
  }
  return new URLSearchParams(await readRawBody(ctx, limitBytes));
}

export const JSON_LIMIT_BYTES = 64 * 1024;

/** Read an application/json body (undefined when empty). 415 for another content type, 400 for bad JSON. */
export async function readJson(ctx: Context, limitBytes = JSON_LIMIT_BYTES): Promise<unknown> {
  const raw = await readRawBody(ctx, limitBytes);
  if (raw.trim() === '') return undefined;
  if (!ctx.is('application/json')) throw new UnsupportedMediaType('expected application/json');
  try {
    return JSON.parse(raw);
  } catch {
    throw new InvalidRequest('the request body is not valid JSON');
  }
}

/**
 * Hand a body we read before oidc-provider (and may have rewritten) on to it: once the stream is
 * consumed, oidc-provider's body parser takes the string from `req.body` instead.
 *
 * oidc-provider then prints, once per process, "WARNING: already parsed request body detected,
 * having upstream middleware parser is not recommended". That is expected here, not a fault: the
 * pre-readers (registration policy and default scope in src/oidc/{registration,mcp}.ts, slow_down in
 * src/oidc/device.ts, JWT introspection/revocation in src/revocation/endpoints.ts) must see the body
 * to decide before oidc-provider does, and it offers no hook between its parser and its handlers.
 * The alternative, a fake IncomingMessage replaying the bytes, would be more fragile than this
 * fallback, which oidc-provider supports on purpose ("resolving to use req.body").
 */
export function handBodyToProvider(ctx: Context, text: string): void {
  (ctx.req as unknown as { body: string }).body = text;
}
