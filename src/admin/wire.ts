// The field names of every command answer (CLI `--json`, the control socket, the admin API): snake_case,
// as OAuth metadata already is (`client_id`, `redirect_uris`). Domain records are camelCase inside
// the code; this is the one place that names them for the outside. Only the top level of each
// record is renamed: nested values are data (a connection's role map is keyed by upstream group
// names) or already snake_case (client metadata).

const snake = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function renamed(record: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [snake(k), v]));
}

/** A command's answer with snake_case field names: a record, or each record of a list. */
export function toWire(result: unknown): unknown {
  if (Array.isArray(result)) return result.map((x) => (isRecord(x) ? renamed(x) : x));
  return isRecord(result) ? renamed(result) : result;
}
