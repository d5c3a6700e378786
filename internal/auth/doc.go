// Package auth verifies access tokens for every resource server (c2c-api,
// coap-gateway, authz's own Bearer endpoints): authz's ES256 JWTs, checked
// against its JWKS (keyset.go fetches and caches it; jws.go parses and checks
// compact ES256 tokens in one pass), and its admin-issued
// opaque tokens, checked against an in-memory copy. With WithRevocations it
// follows authz's revocations (NATS broadcast plus the stored set loaded at
// start), so revoked tokens, tokens of deleted or rotated apps and of
// disabled users are rejected on the next call without a database round
// trip. The only thing it writes is the batched last-used time of opaque
// tokens. It issues nothing.
package auth
