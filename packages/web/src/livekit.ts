// A LiveKit token source for livekit-client: `TokenSource.custom(livekitTokenSource(auth))`. It asks
// Gatehouse's POST /livekit/connection-details with the signed-in user's access token; what the
// participant may do, and in which rooms, is Gatehouse's policy. The answer is the shape
// livekit-client's TokenSource expects ({serverUrl, roomName, participantName, participantToken}).

/** What livekit-client passes to a custom token source's function (its TokenSourceFetchOptions). */
export interface TokenSourceFetchOptions {
  roomName?: string;
  participantName?: string;
  participantIdentity?: string;
  participantMetadata?: string;
  participantAttributes?: Record<string, string>;
  agentName?: string;
  agentMetadata?: string;
}

export interface ConnectionDetails {
  serverUrl: string;
  roomName: string;
  participantName: string;
  participantToken: string;
}

export class ConnectionDetailsError extends Error {
  constructor(message: string, readonly status: number, readonly error?: string) {
    super(message);
    this.name = 'ConnectionDetailsError';
  }
}

export interface LiveKitTokenSourceOptions extends TokenSourceFetchOptions {
  /** Gatehouse's issuer URL; default the auth object's. */
  issuer?: string;
  /**
   * This device's id (letters, digits, `-`; e.g. one kept in localStorage): the identity becomes
   * `user_<sub>_<device>`, so the same user on a second device does not disconnect the first.
   */
  deviceId?: string;
  /** Several agents to dispatch (agentName dispatches one). */
  agents?: { agentName: string; metadata?: string }[];
  fetch?: typeof fetch;
}

/** `auth` is a GatehouseAuth, or anything that hands out the user's access token. */
export function livekitTokenSource(
  auth: { getAccessToken(): Promise<string | undefined>; issuer?: string },
  defaults: LiveKitTokenSourceOptions = {},
): (options?: TokenSourceFetchOptions) => Promise<ConnectionDetails> {
  const issuer = (defaults.issuer ?? auth.issuer ?? '').replace(/\/+$/, '');
  if (!issuer) throw new TypeError('livekitTokenSource needs the issuer');
  const doFetch = defaults.fetch ?? ((...a: Parameters<typeof fetch>) => fetch(...a));
  return async function fetchConnectionDetails(options = {}) {
    const o = { ...defaults, ...options };
    const token = await auth.getAccessToken();
    const agents = [...(o.agents ?? []), ...(o.agentName ? [{ agentName: o.agentName, metadata: o.agentMetadata }] : [])];
    const body = {
      room_name: o.roomName,
      participant_name: o.participantName,
      participant_identity: o.participantIdentity,
      participant_metadata: o.participantMetadata,
      participant_attributes: o.participantAttributes,
      ...(defaults.deviceId ? { device_id: defaults.deviceId } : {}),
      ...(agents.length ? { room_config: { agents: agents.map((a) => ({ agent_name: a.agentName, ...(a.metadata ? { metadata: a.metadata } : {}) })) } } : {}),
    };
    // No token: the request goes without one (guests, where the deployment allows them).
    const res = await doFetch(`${issuer}/livekit/connection-details`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
      credentials: 'omit',
    });
    const json = (await res.json().catch(() => ({}))) as Partial<ConnectionDetails> & { error?: string; error_description?: string };
    if (!res.ok || !json.participantToken || !json.serverUrl) {
      throw new ConnectionDetailsError(json.error_description ?? json.error ?? `connection-details answered ${res.status}`, res.status, json.error);
    }
    return { serverUrl: json.serverUrl, roomName: json.roomName!, participantName: json.participantName!, participantToken: json.participantToken };
  };
}
