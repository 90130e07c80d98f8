package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Permission is the Auth0 RBAC permission every admin call needs. The vote filter checks it
// at the edge too; the control plane checks again so that a route or filter mistake alone
// never opens the elections to anyone.
const Permission = "admin:elections"

// tokenLeeway tolerates clock skew between the identity provider and this host.
const tokenLeeway = 30 * time.Second

// errKeysUnavailable means the JWKS could not be loaded: the token may be valid, so the caller
// answers 503, not 401.
var errKeysUnavailable = errors.New("token signing keys unavailable")

// Principal is a verified token's subject and permissions.
type Principal struct {
	Subject     string
	Permissions []string
}

// claims are the parts of an Auth0 access token we use: RBAC permissions arrive in
// "permissions", those of machine clients as the space-separated "scope".
type claims struct {
	jwt.RegisteredClaims
	Permissions []string `json:"permissions"`
	Scope       string   `json:"scope"`
}

// Authenticator verifies RS256 access tokens of one issuer and audience against its JWKS.
type Authenticator struct {
	url    string
	ready  chan struct{}
	kf     keyfunc.Keyfunc
	err    error
	parser *jwt.Parser
}

// NewAuthenticator starts loading the JWKS in the background, so the control plane serves
// xDS even while the identity provider is unreachable. Keys refresh hourly; an unknown kid (a
// key rotation) triggers a fetch, at most one per 10 s.
func NewAuthenticator(ctx context.Context, jwksURL, issuer, audience string) *Authenticator {
	a := &Authenticator{url: jwksURL, ready: make(chan struct{}), parser: jwt.NewParser(
		// Only RS256: "alg: none" and HS256 tokens signed with the public key fail early.
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)}
	go func() {
		defer close(a.ready)
		a.kf, a.err = keyfunc.NewDefaultOverrideCtx(ctx, []string{jwksURL}, keyfunc.Override{
			Client:            &http.Client{Timeout: 5 * time.Second},
			HTTPTimeout:       5 * time.Second,
			RefreshInterval:   time.Hour,
			RefreshUnknownKID: rate.NewLimiter(rate.Every(10*time.Second), 1),
			RateLimitWaitMax:  time.Second,
		})
	}()
	return a
}

// Verify checks raw and returns its principal. Errors wrapping errKeysUnavailable mean the keys
// are not available; any other error means the token is not acceptable.
func (a *Authenticator) Verify(ctx context.Context, raw string) (Principal, error) {
	select {
	case <-a.ready:
	case <-ctx.Done():
		return Principal{}, fmt.Errorf("%w: jwks %s not loaded yet", errKeysUnavailable, a.url)
	}
	if a.err != nil {
		return Principal{}, fmt.Errorf("%w: jwks %s: %v", errKeysUnavailable, a.url, a.err)
	}
	var c claims
	if _, err := a.parser.ParseWithClaims(raw, &c, a.kf.KeyfuncCtx(ctx)); err != nil {
		return Principal{}, err
	}
	if c.Subject == "" {
		return Principal{}, errors.New("token has no sub")
	}
	p := Principal{Subject: c.Subject, Permissions: c.Permissions}
	for _, s := range strings.Fields(c.Scope) {
		if !slices.Contains(p.Permissions, s) {
			p.Permissions = append(p.Permissions, s)
		}
	}
	return p, nil
}

// bearerToken extracts the token of an "Authorization: Bearer …" header.
func bearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
