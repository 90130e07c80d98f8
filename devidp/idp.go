// Package devidp is a DEVELOPMENT-ONLY identity provider: it serves a JWKS and mints RS256
// access tokens shaped like an Auth0 tenant's, for local runs and tests. Production points the
// vote filter at the real Auth0 tenant; nothing in production may depend on this package.
package devidp

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
)

// Provider holds one signing key and mints tokens for one issuer and audience.
type Provider struct {
	Issuer   string
	Audience string
	key      *rsa.PrivateKey
	kid      string
}

// New generates a fresh RSA key: tokens from a previous run stop verifying, as after a key
// rotation at a real tenant.
func New(issuer, audience string) (*Provider, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &Provider{Issuer: issuer, Audience: audience, key: key, kid: uuid.NewString()}, nil
}

// Key is the signing key, for tests that forge tokens with it.
func (p *Provider) Key() *rsa.PrivateKey { return p.key }

// KeyID is the kid of the signing key in the JWKS.
func (p *Provider) KeyID() string { return p.kid }

// HomeRegionClaim is the custom claim in which the provider names a viewer's home region, as
// an Auth0 Action would from the user's app_metadata (namespaced, as Auth0 requires).
const HomeRegionClaim = "https://votes.local/home_region"

// Mint signs an access token for subject, valid for ttl; admin adds the admin permission.
func (p *Provider) Mint(subject string, admin bool, ttl time.Duration) (string, error) {
	return p.MintHomed(subject, admin, "", ttl)
}

// MintHomed is Mint with the viewer's home region in HomeRegionClaim; "" leaves it out.
func (p *Provider) MintHomed(subject string, admin bool, home string, ttl time.Duration) (string, error) {
	now := time.Now()
	perms := []string{"vote"}
	if admin {
		perms = append(perms, contract.PermAdmin)
	}
	claims := jwt.MapClaims{
		"iss":         p.Issuer,
		"aud":         []string{p.Audience},
		"sub":         subject,
		"iat":         now.Unix(),
		"nbf":         now.Unix(),
		"exp":         now.Add(ttl).Unix(),
		"scope":       "openid vote",
		"permissions": perms,
	}
	if home != "" {
		claims[HomeRegionClaim] = home
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = p.kid
	return t.SignedString(p.key)
}

// JWKS is the public key set document.
func (p *Provider) JWKS() []byte {
	pub := p.key.PublicKey
	doc := map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": p.kid,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}}
	b, _ := json.Marshal(doc)
	return b
}

// Handler serves:
//
//	GET /.well-known/jwks.json                the JWKS
//	GET /.well-known/openid-configuration     issuer and jwks_uri
//	GET /token?sub=ID[&admin=true][&ttl=1h][&home_region=R]
//	                                          a bare access token (text/plain); home_region
//	                                          names the viewer's home in HomeRegionClaim
//	GET /tokens?n=N                           N tokens of N fresh viewers, one per line (load tests)
//	GET /healthz
func (p *Provider) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(p.JWKS())
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"issuer":   p.Issuer,
			"jwks_uri": p.Issuer + ".well-known/jwks.json",
		})
	})
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		sub := r.URL.Query().Get("sub")
		if sub == "" {
			sub = uuid.NewString()
		}
		admin, _ := strconv.ParseBool(r.URL.Query().Get("admin"))
		ttl := time.Hour
		if s := r.URL.Query().Get("ttl"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				http.Error(w, fmt.Sprintf("bad ttl: %v", err), http.StatusBadRequest)
				return
			}
			ttl = d
		}
		tok, err := p.MintHomed(sub, admin, r.URL.Query().Get("home_region"), ttl)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(tok))
	})
	mux.HandleFunc("GET /tokens", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 1 || n > 200000 {
			http.Error(w, "n must be 1..200000", http.StatusBadRequest)
			return
		}
		toks, err := p.MintMany(n, 24*time.Hour)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(strings.Join(toks, "\n") + "\n"))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	return mux
}

// MintMany signs n viewer tokens with random subjects on every core: load tests need one
// fresh viewer per vote, and RSA signing is the slow part.
func (p *Provider) MintMany(n int, ttl time.Duration) ([]string, error) {
	out := make([]string, n)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	workers := runtime.NumCPU()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				tok, err := p.Mint(uuid.NewString(), false, ttl)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				out[i] = tok
			}
		}(w)
	}
	wg.Wait()
	return out, firstErr
}
