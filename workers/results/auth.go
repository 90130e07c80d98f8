package results

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tvvote/voting/filters/votefilter/token"
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

// Authenticator verifies RS256 access tokens of one issuer and audience against its JWKS,
// with the verifier the edge filter uses.
type Authenticator struct {
	v *token.Verifier
}

// NewAuthenticator starts loading the JWKS in the background: the worker starts and serves
// public results even while the identity provider is unreachable. Keys refresh every refresh;
// an unknown kid (a key rotation) triggers a fetch, at most one per 10 s.
func NewAuthenticator(ctx context.Context, jwksURL, issuer, audience string, refresh time.Duration) *Authenticator {
	return &Authenticator{v: token.NewVerifier(token.NewJWKS(ctx, jwksURL, refresh), issuer, audience, tokenLeeway)}
}

// Verify checks raw and returns its principal. Errors wrapping errAuthUnavailable mean the keys are not
// available; any other error means the token is not acceptable. Permissions merge the
// "permissions" claim and the space-separated "scope" of machine clients.
func (a *Authenticator) Verify(ctx context.Context, raw string) (Principal, error) {
	id, err := a.v.Identify(ctx, raw)
	if errors.Is(err, token.ErrJWKSUnavailable) {
		return Principal{}, fmt.Errorf("%w: %v", errAuthUnavailable, err)
	}
	if err != nil {
		return Principal{}, err
	}
	return Principal{Subject: id.Subject, Permissions: id.Permissions}, nil
}

// bearerToken extracts the token of an "Authorization: Bearer …" header.
func bearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
