package results

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

// Permissions that open the statistics endpoint (the contract's ADMIN and AUDITOR roles, as
// Auth0 RBAC permissions).
const (
	PermAdmin          = "admin:elections"
	PermReadStatistics = "read:statistics"
)

// tokenLeeway tolerates clock skew between the identity provider and this host.
const tokenLeeway = 30 * time.Second

// errAuthUnavailable means the keys could not be loaded: the caller answers 503, not 401, since
// the token may be perfectly valid.
var errAuthUnavailable = errors.New("token keys unavailable")

// Principal is a verified token's subject and permissions.
type Principal struct {
	Subject     string
	Permissions []string
}

// Can reports whether the principal holds any of perms.
func (p Principal) Can(perms ...string) bool {
	return slices.ContainsFunc(perms, func(x string) bool { return slices.Contains(p.Permissions, x) })
}

// claims are the parts of an Auth0 access token we use. Auth0 puts RBAC permissions in
// "permissions"; tokens of machine clients carry them as space-separated "scope".
type claims struct {
	jwt.RegisteredClaims
	Permissions []string `json:"permissions"`
	Scope       string   `json:"scope"`
}

// Authenticator verifies RS256 access tokens against one issuer, audience and JWKS. It is our
// own (rather than filters/votefilter/token's Verifier) because the statistics endpoint needs
// the permissions claim, which that verifier does not return.
type Authenticator struct {
	url    string
	ready  chan struct{}
	kf     keyfunc.Keyfunc
	err    error
	parser *jwt.Parser
}

// NewAuthenticator starts loading the JWKS in the background: the worker starts and serves
// public results even while the identity provider is unreachable. Keys refresh every refresh;
// an unknown kid (a key rotation) triggers a fetch, at most one per 10 s.
func NewAuthenticator(ctx context.Context, jwksURL, issuer, audience string, refresh time.Duration) *Authenticator {
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
			RefreshInterval:   refresh,
			RefreshUnknownKID: rate.NewLimiter(rate.Every(10*time.Second), 1),
			RateLimitWaitMax:  time.Second,
		})
	}()
	return a
}

// Verify checks raw and returns its principal. Errors wrapping errAuthUnavailable mean the
// keys are not available; any other error means the token is not acceptable.
func (a *Authenticator) Verify(ctx context.Context, raw string) (Principal, error) {
	select {
	case <-a.ready:
	case <-ctx.Done():
		return Principal{}, fmt.Errorf("%w: jwks %s not loaded yet", errAuthUnavailable, a.url)
	}
	if a.err != nil {
		return Principal{}, fmt.Errorf("%w: jwks %s: %v", errAuthUnavailable, a.url, a.err)
	}
	var c claims
	if _, err := a.parser.ParseWithClaims(raw, &c, a.kf.Keyfunc); err != nil {
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
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
