// Package portal serves ocfcloud's web UI: a single-page app whose assets are
// embedded in the binary (no build step), signing in with the authorization
// code flow and PKCE as the public client ocfcloud-portal, and talking to
// authz and the C2C API over HTTP with the resulting Bearer token. It holds no
// state and no business logic of its own.
package portal
