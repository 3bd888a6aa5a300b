-- Issue 7: a resource server or a LiveKit role policy may require that the user signed in with a
-- second factor (acr urn:gatehouse:acr:mfa). Token exchange (and connection-details) refuse a
-- subject without it with insufficient_user_authentication (RFC 9470).
ALTER TABLE resource_servers ADD COLUMN require_mfa boolean NOT NULL DEFAULT false;

-- A role policy with require_mfa admits its rooms (and contributes its grant) only to MFA sessions.
ALTER TABLE livekit_role_policies ADD COLUMN require_mfa boolean NOT NULL DEFAULT false;
