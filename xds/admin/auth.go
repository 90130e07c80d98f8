package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tvvote/voting/filters/votefilter/token"
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

// Authenticator verifies RS256 access tokens of one issuer and audience against its JWKS,
// with the verifier the edge filter uses.
type Authenticator struct {
	v *token.Verifier
}

// NewAuthenticator starts loading the JWKS in the background, so the control plane serves
// xDS even while the identity provider is unreachable. Keys refresh hourly; an unknown kid (a
// key rotation) triggers a fetch, at most one per 10 s.
func NewAuthenticator(ctx context.Context, jwksURL, issuer, audience string) *Authenticator {
	return &Authenticator{v: token.NewVerifier(token.NewJWKS(ctx, jwksURL, time.Hour), issuer, audience, tokenLeeway)}
}

// Verify checks raw and returns its principal. Errors wrapping errKeysUnavailable mean the keys are not
// available; any other error means the token is not acceptable. Permissions merge the
// "permissions" claim and the space-separated "scope" of machine clients.
func (a *Authenticator) Verify(ctx context.Context, raw string) (Principal, error) {
	id, err := a.v.Identify(ctx, raw)
	if errors.Is(err, token.ErrJWKSUnavailable) {
		return Principal{}, fmt.Errorf("%w: %v", errKeysUnavailable, err)
	}
	if err != nil {
		return Principal{}, err
	}
	return Principal{Subject: id.Subject, Permissions: id.Permissions}, nil
}

// bearerToken extracts the token of an "Authorization: Bearer …" header.
func bearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
