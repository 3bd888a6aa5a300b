-- Issue 14, the one scope rule (docs/authorization.md):
-- default_scopes: what a request naming none of the resource's scopes gets (NULL = all its scopes).
-- token_claims: user claims the resource's JWT access tokens carry ('roles', 'permissions').
ALTER TABLE resource_servers ADD COLUMN default_scopes text[];
ALTER TABLE resource_servers ADD COLUMN token_claims text[] NOT NULL DEFAULT '{}';
