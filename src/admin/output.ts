// How the `gatehouse` command line prints an answer: `get` and `list` as a table for people, every
// other command (and anything with --json) as JSON for scripts. Field names are the JSON ones
// (snake_case, src/admin/wire.ts). No imports: the CLI loads this for every command.

type Row = Record<string, unknown>;

/** The columns of each list, in order; a `get` shows every field. */
const LIST_COLUMNS: Record<string, string[]> = {
  'user list': ['id', 'email', 'name', 'active', 'email_verified', 'last_login_at'],
  'client list': ['client_id', 'name', 'type', 'metadata.grant_types', 'origin', 'metadata.redirect_uris'],
  'resource list': ['uri', 'name', 'scopes', 'access_token_ttl', 'signing', 'require_mfa'],
  'role list': ['name', 'users', 'permissions', 'description'],
  'connection list': ['name', 'issuer', 'domains', 'enabled', 'jit', 'has_client_secret'],
  'policy client list': ['client_id', 'livekit', 'resources', 'scopes', 'may_act', 'agent_name'],
  'policy role list': ['role', 'room_patterns', 'can_publish', 'can_subscribe', 'can_publish_data', 'room_admin', 'require_mfa'],
  'keys list': ['kid', 'alg', 'created_at', 'retired_at', 'expires_at'],
  'livekit options list': ['scope', 'name', 'room_prefix', 'max_participants', 'empty_timeout', 'departure_timeout'],
};

const MAX_CELL = 60;

/** The command's name as the table specs know it: `policy client list`, `user get`, `keys list`. */
function commandName(argv: string[]): string {
  // Three words where the verb comes third (`policy client list`, `livekit options get`).
  return argv.slice(0, argv[2] === 'list' || argv[2] === 'get' ? 3 : 2).join(' ');
}

/** Whether the command prints a table unless --json is given. */
export function printsTable(argv: string[]): boolean {
  return /^(\S+ )+(list|get)$/.test(commandName(argv));
}

// Token-exchange and device grant URNs are long; their last part says which.
const short = (s: string) => s.replace(/^urn:ietf:params:oauth:grant-type:/, '').replace(/^urn:openid:params:grant-type:/, '');

function cell(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (Array.isArray(v)) return v.length ? v.map((x) => (typeof x === 'string' ? short(x) : cell(x))).join(', ') : '-';
  if (typeof v === 'object') return JSON.stringify(v);
  const s = String(v);
  // Dates come as ISO strings; seconds are enough to read.
  return /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/.test(s) ? s.replace(/\.\d+Z$/, 'Z') : s;
}

const fit = (s: string) => (s.length > MAX_CELL ? `${s.slice(0, MAX_CELL - 1)}…` : s);

function pick(row: Row, path: string): unknown {
  return path.split('.').reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Row)[k] : undefined), row);
}

const heading = (path: string) => path.replace(/^metadata\./, '').replaceAll('_', ' ').toUpperCase();

/** Columns padded to their widest cell, two spaces apart. */
export function table(rows: Row[], columns: string[]): string {
  const cells = rows.map((r) => columns.map((c) => fit(cell(pick(r, c)))));
  const head = columns.map(heading);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(head), ...cells.map(line)].join('\n');
}

/** One record as `field  value` lines; nested records (client metadata, claim maps) as `field.key`. */
export function details(record: Row): string {
  const lines: [string, string][] = [];
  for (const [k, v] of Object.entries(record)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v as Row)) lines.push([`${k}.${k2}`, cell(v2)]);
    } else {
      lines.push([k, cell(v)]);
    }
  }
  const width = Math.max(0, ...lines.map(([k]) => k.length));
  return lines.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

/** What the CLI prints for a command's answer (already JSON-shaped: dates are strings). */
export function formatOutput(argv: string[], result: unknown, json: boolean): string {
  if (json || !printsTable(argv)) return JSON.stringify(result, null, 2);
  const name = commandName(argv);
  if (Array.isArray(result)) {
    if (result.length === 0) return '(none)';
    const rows = result as Row[];
    const columns = LIST_COLUMNS[name] ?? Object.keys(rows[0]).filter((k) => typeof rows[0][k] !== 'object' || Array.isArray(rows[0][k]));
    return table(rows, columns);
  }
  if (result && typeof result === 'object') return details(result as Row);
  return JSON.stringify(result, null, 2);
}

/** Exit status for an operator mistake, by the HTTP status the admin API would answer with. */
export function exitCodeFor(status: number): number {
  if (status === 404) return 3;
  if (status === 409) return 4;
  return status >= 500 ? 1 : 2;
}
