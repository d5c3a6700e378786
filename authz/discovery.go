package authz

import (
	"net/http"

	"github.com/go-jose/go-jose/v4"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
)

// discoveryDocument is the OpenID Provider Metadata (OIDC Discovery, RFC
// 8414).
type discoveryDocument struct {
	Issuer             string   `json:"issuer"`
	AuthorizationEP    string   `json:"authorization_endpoint"`
	PKCEMethods        []string `json:"code_challenge_methods_supported"`
	ResponseModes      []string `json:"response_modes_supported"`
	ISSParameter       bool     `json:"authorization_response_iss_parameter_supported"`
	PromptValues       []string `json:"prompt_values_supported"`
	TokenEndpoint      string   `json:"token_endpoint"`
	RevocationEndpoint string   `json:"revocation_endpoint"`
	Introspection      string   `json:"introspection_endpoint"`
	JWKSURI            string   `json:"jwks_uri"`
	UserinfoEndpoint   string   `json:"userinfo_endpoint"`
	GrantTypes         []string `json:"grant_types_supported"`
	ResponseTypes      []string `json:"response_types_supported"`
	Scopes             []string `json:"scopes_supported"`
	TokenEndpointAuth  []string `json:"token_endpoint_auth_methods_supported"`
	IDTokenSigningAlgs []string `json:"id_token_signing_alg_values_supported"`
	SubjectTypes       []string `json:"subject_types_supported"`
	ClaimsSupported    []string `json:"claims_supported"`
	RevocationAuth     []string `json:"revocation_endpoint_auth_methods_supported"`
	IntrospectionAuth  []string `json:"introspection_endpoint_auth_methods_supported"`
}

// tokenEndpointAuthMethods also apply to revocation and introspection.
var tokenEndpointAuthMethods = []string{"client_secret_basic", "client_secret_post", "none"}

func (s *Server) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	iss := s.cfg.Issuer
	httpx.WriteJSON(w, http.StatusOK, discoveryDocument{
		Issuer:             iss,
		AuthorizationEP:    iss + authorizePath,
		PKCEMethods:        []string{"S256"},
		ResponseModes:      []string{"query"},
		ISSParameter:       true,
		PromptValues:       []string{"none", "login", "consent"},
		TokenEndpoint:      iss + tokenPath,
		RevocationEndpoint: iss + revokePath,
		Introspection:      iss + introspectPath,
		JWKSURI:            iss + jwksPath,
		UserinfoEndpoint:   iss + userinfoPath,
		GrantTypes:         supportedGrants,
		ResponseTypes:      []string{"code"},
		Scopes:             append([]string{scopeOpenID, auth.ScopeOfflineAccess}, apiScopes...),
		TokenEndpointAuth:  tokenEndpointAuthMethods,
		IDTokenSigningAlgs: []string{string(jose.ES256)},
		SubjectTypes:       []string{"public"},
		RevocationAuth:     tokenEndpointAuthMethods,
		IntrospectionAuth:  tokenEndpointAuthMethods[:2],
		ClaimsSupported:    []string{"iss", "sub", "aud", "exp", "iat", "jti", "scope", "client_id", "role", "di", "preferred_username", "nonce", "at_hash", "auth_time", "azp"},
	})
}

func (s *Server) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	// Verifiers cache keys in memory and refetch on an unknown kid.
	httpx.WriteJSON(w, http.StatusOK, s.keys.Load().jwks(s.now(), s.keyRetention()))
}
