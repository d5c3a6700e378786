// Package authz is the OAuth 2.0 / OpenID Connect authorization server of
// ocfcloud. It owns the users and their argon2id password hashes, the OAuth
// clients (the built-in ocfcloud-cli and ocfcloud-device, and the app
// registrations of users, with SHA-256-hashed and AES-GCM-sealed secrets),
// authorization codes, consents and sign-in sessions, refresh-token chains
// (stored as hashes, rotated on every use, reuse revokes the chain),
// admin-issued opaque access tokens, onboarding codes, the ES256 signing
// keys (published through OIDC discovery and a JWKS), the revocation list
// that every resource server follows through package internal/auth, and the
// audit log. It serves the OAuth endpoints, the login and consent pages and
// the management API under /api/v1 (apps, users, audit); docs/AUTHZ.md
// explains the choices.
//
// It must not hold device or registry logic: it binds an onboarding code to a
// device id and puts that id into the device's tokens, but it does not know
// whether the device exists, who owns it or whether it is online. Recording
// the owner is the device registry's job, driven by the gateway's sign-up.
package authz
