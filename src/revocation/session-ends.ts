// Sessions that Gatehouse ends itself (a user revoked: password change or reset, disable, delete,
// MFA reset, "sign out everywhere"; `gatehouse revoke --session`) rather than through RP-initiated
// logout. oidc-provider tells relying parties about the sessions it ends (OIDC Back-Channel Logout
// 1.0); this tells them about these too, so an RP with a back-channel logout URI drops its own
// session of the user as well. The revocation writes the ended sessions here; the app, which owns
// the provider, attaches the sender. Sending never holds up the revocation.

/** What oidc-provider keeps of a session that the logout tokens need. */
export interface EndedSession {
  accountId: string;
  /** Per client: the sid that client was given. */
  authorizations: Record<string, { sid?: string }>;
}

export type SessionEndSender = (sessions: EndedSession[], reason: string) => void;

export function createSessionEnds() {
  let send: SessionEndSender | undefined;
  return {
    attach(sender: SessionEndSender) {
      send = sender;
    },
    /** Session payloads (oidc_payloads.payload) just deleted, and why. */
    ended(payloads: unknown[], reason: string) {
      const sessions = payloads.flatMap((p) => {
        const s = p as { accountId?: unknown; authorizations?: unknown };
        return typeof s?.accountId === 'string' && s.authorizations && typeof s.authorizations === 'object'
          ? [{ accountId: s.accountId, authorizations: s.authorizations as EndedSession['authorizations'] }]
          : [];
      });
      if (send && sessions.length) send(sessions, reason);
    },
  };
}
export type SessionEnds = ReturnType<typeof createSessionEnds>;
