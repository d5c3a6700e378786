// Package authz is the OAuth 2.0 / OpenID Connect authorization server of
// ocfcloud. It owns the users and their argon2id password hashes, the
// built-in OAuth clients (ocfcloud-cli for people and scripts, ocfcloud-device
// for the coap-gateway acting on behalf of devices), the single-use onboarding
// codes that the portal hands out, the refresh tokens (stored only as SHA-256
// hashes and rotated on every use) and the ES256 signing keys, which it
// publishes through OIDC discovery and a JWKS so that every resource server can
// verify access tokens locally with package internal/auth.
//
// It must not hold device or registry logic: it binds an onboarding code to a
// device id and puts that id into the device's tokens, but it does not know
// whether the device exists, who owns it or whether it is online. Recording
// the owner is the device registry's job, driven by the gateway's sign-up.
package authz
