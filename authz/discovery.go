package authz

import (
	"net/http"

	"github.com/go-jose/go-jose/v4"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
)

// discoveryDocument is the OpenID Provider Metadata. authorization_endpoint
// is left out until /oauth/authorize exists, so clients are not told a lie.
type discoveryDocument struct {
	Issuer             string   `json:"issuer"`
	TokenEndpoint      string   `json:"token_endpoint"`
	JWKSURI            string   `json:"jwks_uri"`
	UserinfoEndpoint   string   `json:"userinfo_endpoint"`
	GrantTypes         []string `json:"grant_types_supported"`
	ResponseTypes      []string `json:"response_types_supported"`
	Scopes             []string `json:"scopes_supported"`
	TokenEndpointAuth  []string `json:"token_endpoint_auth_methods_supported"`
	IDTokenSigningAlgs []string `json:"id_token_signing_alg_values_supported"`
	SubjectTypes       []string `json:"subject_types_supported"`
	ClaimsSupported    []string `json:"claims_supported"`
}

func (s *Server) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	iss := s.cfg.Issuer
	httpx.WriteJSON(w, http.StatusOK, discoveryDocument{
		Issuer:             iss,
		TokenEndpoint:      iss + tokenPath,
		JWKSURI:            iss + jwksPath,
		UserinfoEndpoint:   iss + userinfoPath,
		GrantTypes:         []string{grantPassword, grantAuthorizationCode, grantRefreshToken},
		ResponseTypes:      []string{"code"},
		Scopes:             append([]string{scopeOpenID, auth.ScopeOfflineAccess}, apiScopes...),
		TokenEndpointAuth:  []string{"none"},
		IDTokenSigningAlgs: []string{string(jose.ES256)},
		SubjectTypes:       []string{"public"},
		ClaimsSupported:    []string{"iss", "sub", "aud", "exp", "iat", "jti", "scope", "client_id", "role", "di", "preferred_username"},
	})
}

func (s *Server) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	// Verifiers cache keys in memory and refetch on an unknown kid.
	httpx.WriteJSON(w, http.StatusOK, s.keys.jwks)
}
