// `client create --preset KIND` (issue 18): the settings each kind of client needs, so an operator
// does not have to know which grants, authentication method and redirect rules go together.
// docs/cli.md has the same table for people. Explicit flags win over the preset.
import type { AuthMethod } from '../oidc/clients.ts';

const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const DEVICE = 'urn:ietf:params:oauth:grant-type:device_code';

export interface ClientPreset {
  /** One line for `gatehouse help` and error messages. */
  summary: string;
  type: 'public' | 'confidential';
  grants: string[];
  authMethod?: AuthMethod;
  applicationType: 'web' | 'native';
  /** The flow sends a browser back, so --redirect-uri is required. */
  needsRedirect: boolean;
  /** Token-exchange policy written with the client (policy client set); resources come from --resource. */
  policy?: { act: boolean };
  /** An example command for this preset. */
  example: string;
}

export const CLIENT_PRESETS = {
  // Public: a browser app cannot keep a secret. PKCE S256 is enforced for public clients and
  // refresh tokens rotate, with reuse revoking the grant (docs/clients.md).
  spa: {
    summary: 'single-page app in the browser: public, code + PKCE, rotating refresh tokens',
    type: 'public', grants: ['authorization_code', 'refresh_token'], applicationType: 'web', needsRedirect: true,
    example: 'gatehouse client create --preset spa --name "Web app" --redirect-uri https://app.example.com/callback',
  },
  // RFC 8252: loopback http on any port (§7.3), a private-use scheme (§7.1) or a claimed https URI.
  native: {
    summary: 'desktop or mobile app: public, code + PKCE, loopback or private-use-scheme redirects',
    type: 'public', grants: ['authorization_code', 'refresh_token'], applicationType: 'native', needsRedirect: true,
    example: 'gatehouse client create --preset native --name "Desktop app" --redirect-uri http://127.0.0.1/callback --redirect-uri com.example.app:/callback',
  },
  web: {
    summary: 'server-side web app: confidential (client_secret_basic), code + refresh tokens',
    type: 'confidential', grants: ['authorization_code', 'refresh_token'], authMethod: 'client_secret_basic', applicationType: 'web', needsRedirect: true,
    example: 'gatehouse client create --preset web --name "Portal" --redirect-uri https://portal.example.com/callback',
  },
  // An agent gets its own token (client credentials) and acts for users by token exchange, with
  // `act` naming it (RFC 8693 §4.1); which resources it may reach is its exchange policy.
  agent: {
    summary: 'AI agent or backend: confidential, client credentials + token exchange, may act for users (--resource U ...)',
    type: 'confidential', grants: ['client_credentials', TX], authMethod: 'client_secret_basic', applicationType: 'web', needsRedirect: false,
    policy: { act: true },
    example: 'gatehouse client create --preset agent --name "Voice agent" --resource https://mcp.example.com/mcp',
  },
  // RFC 8628: the device shows a code, the user approves on a phone; nothing to redirect to.
  device: {
    summary: 'voice device or TV without a keyboard: public, device code + refresh tokens',
    type: 'public', grants: [DEVICE, 'refresh_token'], applicationType: 'web', needsRedirect: false,
    example: 'gatehouse client create --preset device --name "Kitchen speaker"',
  },
  // A resource server's own credentials: it authenticates at /token/introspection and
  // /token/revocation (RFC 7662, RFC 7009) and may get tokens of its own.
  'mcp-server': {
    summary: 'MCP server or API (resource server): confidential credentials for introspection',
    type: 'confidential', grants: ['client_credentials'], authMethod: 'client_secret_basic', applicationType: 'web', needsRedirect: false,
    example: 'gatehouse client create --preset mcp-server --name "Tools MCP server"',
  },
} as const satisfies Record<string, ClientPreset>;

export type PresetName = keyof typeof CLIENT_PRESETS;
export const PRESET_NAMES = Object.keys(CLIENT_PRESETS) as PresetName[];
export const isPreset = (name: string): name is PresetName => Object.hasOwn(CLIENT_PRESETS, name);
