// A small reader for HTML form posts on our own pages. oidc-provider parses its own bodies; ours are
// only a few fields, so a tight cap keeps a slow or huge upload from tying up the process.
import type { Context } from 'koa';
import { PayloadTooLarge, UnsupportedMediaType } from './errors.ts';

export const FORM_LIMIT_BYTES = 16 * 1024;

/** Read an application/x-www-form-urlencoded body. 415 for another content type, 413 past the limit. */
export async function readForm(ctx: Context, limitBytes = FORM_LIMIT_BYTES): Promise<URLSearchParams> {
  if (!ctx.is('application/x-www-form-urlencoded')) {
    throw new UnsupportedMediaType('expected application/x-www-form-urlencoded');
  }
  const declared = Number(ctx.get('content-length') || 0);
  if (declared > limitBytes) throw new PayloadTooLarge(`request body exceeds ${limitBytes} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    // Chunked bodies declare no length: count as we read and stop at the cap.
    if (size > limitBytes) throw new PayloadTooLarge(`request body exceeds ${limitBytes} bytes`);
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}
