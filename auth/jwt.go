// Package auth verifies access tokens as an Auth0 tenant issues them — RS256 JWTs signed by a
// key from the tenant's JWKS — and says who holds them. The edge filter, the control plane's
// admin API and the results worker all authenticate with it.
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Verifier checks tokens against one issuer, audience and JWKS. The edge filter, the results
// worker and the control plane's admin API all verify with it.
type Verifier struct {
	// validator checks the claims once the signature is good; cache remembers verified tokens.
	validator *jwt.Validator
	cache     *tokenCache
	now       func() time.Time

	keys   *JWKS
	parser *jwt.Parser
	// PermissionsClaim names the claim listing permissions (Auth0 RBAC: "permissions").
	PermissionsClaim string
	// HomeRegionClaim names a string claim with the viewer's home region (an Auth0 custom
	// claim set from the user's app_metadata); empty: not read.
	HomeRegionClaim string
}

// DefaultLeeway tolerates clock skew between the identity provider and the verifying host on
// exp, nbf and iat.
const DefaultLeeway = 30 * time.Second

// Principal is what a valid token says about its bearer.
type Principal struct {
	// Subject is the token's sub: the viewer id.
	Subject string
	// Permissions are the token's permissions claim (a list, or a space-separated string).
	Permissions []string
	// HomeRegion is the token's home-region claim (Verifier.HomeRegionClaim), "" without one.
	HomeRegion string
}

// Has reports whether the principal holds permission p.
func (i Principal) Has(p string) bool { return slices.Contains(i.Permissions, p) }

// Can reports whether the principal holds any of perms.
func (i Principal) Can(perms ...string) bool { return slices.ContainsFunc(perms, i.Has) }

// BearerToken extracts the token of an "Authorization: Bearer …" header value; the scheme is
// case-insensitive, surrounding spaces are not part of the token.
func BearerToken(header string) (string, bool) {
	scheme, raw, ok := strings.Cut(strings.TrimSpace(header), " ")
	raw = strings.TrimSpace(raw)
	if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return "", false
	}
	return raw, true
}

// NewVerifier builds a verifier. Only RS256 is accepted, so "alg: none" and HS256 tokens
// signed with the public key fail before any key is looked at.
func NewVerifier(keys *JWKS, issuer, audience string, leeway time.Duration) *Verifier {
	v := &Verifier{keys: keys, PermissionsClaim: "permissions", cache: newTokenCache(tokenCacheSize), now: time.Now}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithLeeway(leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	}
	v.parser, v.validator = jwt.NewParser(opts...), jwt.NewValidator(opts...)
	return v
}

// Verify checks the token and returns its subject and permissions. An error wrapping
// ErrKeysUnavailable means the signing keys could not be loaded: the token may well be valid,
// so callers answer 503, not 401. Permissions merge the permissions claim and the
// space-separated scope of machine clients.
func (v *Verifier) Verify(ctx context.Context, raw string) (Principal, error) {
	claims, err := v.verifiedClaims(ctx, raw)
	if err != nil {
		return Principal{}, err
	}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return Principal{}, errors.New("token has no sub")
	}
	perms := permissions(claims[v.PermissionsClaim])
	// Machine clients' tokens carry their permissions in the space-separated scope.
	for _, p := range permissions(claims["scope"]) {
		if !slices.Contains(perms, p) {
			perms = append(perms, p)
		}
	}
	id := Principal{Subject: sub, Permissions: perms}
	if v.HomeRegionClaim != "" {
		id.HomeRegion, _ = claims[v.HomeRegionClaim].(string)
	}
	return id, nil
}

// Reason classifies a verification error for metrics, without leaking details to viewers.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "signature"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "not_yet_valid"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenInvalidAudience),
		errors.Is(err, jwt.ErrTokenRequiredClaimMissing), errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "claims"
	case errors.Is(err, ErrKeysUnavailable):
		return "jwks_unavailable"
	}
	return "invalid"
}

func permissions(v any) []string {
	switch p := v.(type) {
	case []any:
		out := make([]string, 0, len(p))
		for _, x := range p {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case string:
		return strings.Fields(p)
	}
	return nil
}

// ErrKeysUnavailable wraps failures to load the signing keys: the token may be valid, so
// callers that can tell (the admin API, the results worker) answer 503 rather than 401.
var ErrKeysUnavailable = errors.New("jwks not available")

// JWKS is a remote key set refreshed in the background. Keys already fetched keep verifying
// while the JWKS endpoint is down.
type JWKS struct {
	url   string
	ready chan struct{}
	kf    keyfunc.Keyfunc
	err   error
	once  sync.Once
	// prepared holds each RSA key ready for verification, shared by the verifiers of this set.
	prepared preparedKeys
}

// NewJWKS starts fetching url in the background: construction never blocks the caller
// (Envoy's main thread, when a config arrives).
func NewJWKS(ctx context.Context, url string, refresh time.Duration) *JWKS {
	j := &JWKS{url: url, ready: make(chan struct{})}
	go func() {
		defer close(j.ready)
		j.kf, j.err = keyfunc.NewDefaultOverrideCtx(ctx, []string{url}, keyfunc.Override{
			Client:          &http.Client{Timeout: 5 * time.Second},
			HTTPTimeout:     5 * time.Second,
			RefreshInterval: refresh,
			// An unknown kid (key rotation) triggers a fetch, at most one per 10 s.
			RefreshUnknownKID: rate.NewLimiter(rate.Every(10*time.Second), 1),
			RateLimitWaitMax:  time.Second,
		})
	}()
	return j
}

func (j *JWKS) keyfunc(ctx context.Context) (keyfunc.Keyfunc, error) {
	select {
	case <-j.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s not loaded yet: %w", ErrKeysUnavailable, j.url, ctx.Err())
	}
	if j.err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeysUnavailable, j.url, j.err)
	}
	return j.kf, nil
}
