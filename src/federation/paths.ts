// Paths of the federation routes that operators register at upstream IdPs; here, apart from the
// router, so the CLI can print them without loading the routes.

/** The redirect URI to register at every upstream IdP. */
export const callbackPath = '/federation/callback';
/** The post-logout redirect URI to register at upstreams that support RP-initiated logout. */
export const loggedOutPath = '/federation/logged-out';
