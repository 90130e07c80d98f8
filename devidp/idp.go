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
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// AdminPermission is the Auth0 RBAC permission that admin tokens carry.
const AdminPermission = "admin:elections"

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

// Mint signs an access token for subject, valid for ttl; admin adds the admin permission.
func (p *Provider) Mint(subject string, admin bool, ttl time.Duration) (string, error) {
	now := time.Now()
	perms := []string{"vote"}
	if admin {
		perms = append(perms, AdminPermission)
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
//	GET /token?sub=ID[&admin=true][&ttl=1h]   a bare access token (text/plain)
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
		tok, err := p.Mint(sub, admin, ttl)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(tok))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	return mux
}
