-- Identity Assertion JWT Authorization Grant (ID-JAG, issue 19), both roles.

-- As the enterprise IdP: which other authorization servers (audience = their issuer) a client may
-- get an ID-JAG for, the client_id the client has there, the resources and scopes it may name.
-- Deny by default: no row, no ID-JAG. Part of the client's token-exchange policy (002).
CREATE TABLE exchange_id_jag_targets (
  client_id        text        NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
  -- the target authorization server's issuer identifier (RFC 8414), the ID-JAG's aud
  audience         text        NOT NULL,
  -- the client's identifier at that server, the ID-JAG's client_id claim
  target_client_id text        NOT NULL,
  -- resource identifiers (RFC 8707) at that server it may name; at least one
  resources        text[]      NOT NULL,
  -- scopes it may ask for there; NULL = the requested scopes go through (the target server decides)
  scopes           text[],
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (client_id, audience)
);

-- As the MCP server's authorization server: an enterprise connection (007) can also be trusted to
-- issue ID-JAGs. Its issuer, claim map, role map, jit and link_by_email apply as for sign-in.
ALTER TABLE federation_connections
  -- accept ID-JAGs from this issuer (jwt-bearer grant)
  ADD COLUMN id_jag           boolean NOT NULL DEFAULT false,
  -- where its signing keys are; NULL = the jwks_uri of its discovery document
  ADD COLUMN id_jag_jwks_uri  text,
  -- or the keys themselves (a JWK Set), for an issuer whose keys are not published
  ADD COLUMN id_jag_jwks      jsonb,
  -- the clients (ours) that may present its ID-JAGs; empty = none
  ADD COLUMN id_jag_clients   text[]  NOT NULL DEFAULT '{}',
  -- the registered resources its ID-JAGs may name; empty = none
  ADD COLUMN id_jag_resources text[]  NOT NULL DEFAULT '{}';
