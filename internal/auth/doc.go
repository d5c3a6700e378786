// Package auth verifies the ES256 JWT access tokens that authz issues, for
// every resource server (c2c-api, coap-gateway, authz's own Bearer endpoints).
// It fetches and caches authz's JWKS through go-oidc and turns a token into
// Claims. It issues nothing and stores nothing.
package auth
