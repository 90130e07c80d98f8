// Package token verifies viewer access tokens as an Auth0 tenant issues them: RS256 JWTs
// signed by a key from the tenant's JWKS.
package token

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Verifier checks tokens against one issuer, audience and JWKS.
type Verifier struct {
	keys   *JWKS
	parser *jwt.Parser
}

// NewVerifier builds a verifier. Only RS256 is accepted, so "alg: none" and HS256 tokens
// signed with the public key fail before any key is looked at.
func NewVerifier(keys *JWKS, issuer, audience string, leeway time.Duration) *Verifier {
	return &Verifier{keys: keys, parser: jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithLeeway(leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)}
}

// Verify returns the token's subject (the viewer id) when the token is valid.
func (v *Verifier) Verify(ctx context.Context, raw string) (string, error) {
	kf, err := v.keys.keyfunc(ctx)
	if err != nil {
		return "", err
	}
	var claims jwt.RegisteredClaims
	if _, err := v.parser.ParseWithClaims(raw, &claims, kf.KeyfuncCtx(ctx)); err != nil {
		return "", err
	}
	if claims.Subject == "" {
		return "", errors.New("token has no sub")
	}
	return claims.Subject, nil
}

// JWKS is a remote key set refreshed in the background. Keys already fetched keep verifying
// while the JWKS endpoint is down.
type JWKS struct {
	url   string
	ready chan struct{}
	kf    keyfunc.Keyfunc
	err   error
	once  sync.Once
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
		return nil, fmt.Errorf("jwks %s not loaded yet: %w", j.url, ctx.Err())
	}
	if j.err != nil {
		return nil, fmt.Errorf("jwks %s: %w", j.url, j.err)
	}
	return j.kf, nil
}
