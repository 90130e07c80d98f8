package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devidp"
)

const (
	issuer   = "https://tvvote-dev.eu.auth0.com/"
	audience = "https://api.tvvote.test/votes"
	leeway   = 30 * time.Second
)

// idp is a devidp provider behind an httptest server; stop takes the JWKS endpoint down.
type idp struct {
	p    *devidp.Provider
	srv  *httptest.Server
	url  string
	hits atomic.Int64
	down atomic.Bool // answer 503 instead of the JWKS
}

func newIDP(t testing.TB) *idp {
	t.Helper()
	p, err := devidp.New(issuer, audience)
	if err != nil {
		t.Fatal(err)
	}
	i := &idp{p: p}
	h := p.Handler()
	i.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i.hits.Add(1)
		if i.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(i.srv.Close)
	i.url = i.srv.URL + "/.well-known/jwks.json"
	return i
}

func newVerifier(t *testing.T, url string, refresh time.Duration) *Verifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return NewVerifier(NewJWKS(ctx, url, refresh), issuer, audience, leeway)
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// claims are the standard claims of a good token at now.
func claims(sub string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": issuer, "aud": []string{audience}, "sub": sub,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestVerify(t *testing.T) {
	i := newIDP(t)
	v := newVerifier(t, i.url, time.Hour)
	key, kid := i.p.Key(), i.p.KeyID()
	now := time.Now()

	minted, err := i.p.Mint("auth0|viewer-42", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	with := func(edit func(c jwt.MapClaims)) jwt.MapClaims {
		c := claims("auth0|viewer-42")
		edit(c)
		return c
	}
	parts := strings.Split(minted, ".")
	tampered := parts[0] + "." + b64(`{"iss":"`+issuer+`","aud":["`+audience+`"],"sub":"auth0|someone-else","exp":`+
		strconv.FormatInt(now.Add(time.Hour).Unix(), 10)+`}`) + "." + parts[2]

	ok := []struct {
		name, tok, sub string
	}{
		{"minted by the idp", minted, "auth0|viewer-42"},
		{"forged with the right key", sign(t, jwt.SigningMethodRS256, key, kid, claims("u-1")), "u-1"},
		{"aud as a string", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["aud"] = audience })), "auth0|viewer-42"},
		{"aud among others", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["aud"] = []string{"https://other/", audience} })), "auth0|viewer-42"},
		{"expired within leeway", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-time.Hour).Unix(), now.Add(-time.Hour).Unix(), now.Add(-10*time.Second).Unix()
		})), "auth0|viewer-42"},
		{"nbf within leeway", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["nbf"] = now.Add(10 * time.Second).Unix() })), "auth0|viewer-42"},
		{"no kid: every key is tried", sign(t, jwt.SigningMethodRS256, key, "", claims("u-2")), "u-2"},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			p, err := v.Verify(testCtx(t, 5*time.Second), tc.tok)
			sub := p.Subject
			if err != nil || sub != tc.sub {
				t.Fatalf("Verify = %q, %v; want %q", sub, err, tc.sub)
			}
		})
	}

	bad := []struct {
		name string
		tok  string
		is   error // the jwt error the rejection must wrap; nil to only require an error
	}{
		{"expired", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Add(-time.Minute).Unix()
		})), jwt.ErrTokenExpired},
		{"no exp", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { delete(c, "exp") })), jwt.ErrTokenRequiredClaimMissing},
		{"nbf beyond leeway", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["nbf"] = now.Add(2 * time.Minute).Unix() })), jwt.ErrTokenNotValidYet},
		{"iat in the future", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["iat"] = now.Add(2 * time.Minute).Unix() })), jwt.ErrTokenUsedBeforeIssued},
		{"wrong issuer", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["iss"] = "https://evil.auth0.com/" })), jwt.ErrTokenInvalidIssuer},
		{"no issuer", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { delete(c, "iss") })), jwt.ErrTokenRequiredClaimMissing},
		{"wrong audience", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["aud"] = []string{"https://api.other/"} })), jwt.ErrTokenInvalidAudience},
		{"no audience", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { delete(c, "aud") })), jwt.ErrTokenRequiredClaimMissing},
		{"missing sub", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { delete(c, "sub") })), nil},
		{"empty sub", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["sub"] = "" })), nil},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, claims("u-none")), jwt.ErrTokenSignatureInvalid},
		{"alg none by hand", b64(`{"alg":"none","typ":"JWT","kid":"`+kid+`"}`) + "." + parts[1] + ".", nil},
		{"alg none with the real signature", b64(`{"alg":"none","kid":"`+kid+`"}`) + "." + parts[1] + "." + parts[2], nil},
		{"HS256 keyed with the public key PEM", sign(t, jwt.SigningMethodHS256, pubPEM, kid, claims("u-hs")), jwt.ErrTokenSignatureInvalid},
		{"HS256 keyed with the public key DER", sign(t, jwt.SigningMethodHS256, pubDER, kid, claims("u-hs")), jwt.ErrTokenSignatureInvalid},
		{"HS256 keyed with the modulus", sign(t, jwt.SigningMethodHS256, key.PublicKey.N.Bytes(), kid, claims("u-hs")), jwt.ErrTokenSignatureInvalid},
		{"RS512 with the right key", sign(t, jwt.SigningMethodRS512, key, kid, claims("u-rs512")), jwt.ErrTokenSignatureInvalid},
		{"PS256 with the right key", sign(t, jwt.SigningMethodPS256, key, kid, claims("u-ps256")), jwt.ErrTokenSignatureInvalid},
		{"other RSA key, same kid", sign(t, jwt.SigningMethodRS256, otherKey, kid, claims("u-forged")), jwt.ErrTokenSignatureInvalid},
		{"tampered payload", tampered, jwt.ErrTokenSignatureInvalid},
		{"signature stripped", parts[0] + "." + parts[1] + ".", jwt.ErrTokenSignatureInvalid},
		{"empty", "", jwt.ErrTokenMalformed},
		{"not a jwt", "not a jwt", jwt.ErrTokenMalformed},
		{"three dots", "...", jwt.ErrTokenMalformed},
		{"two segments", parts[0] + "." + parts[1], jwt.ErrTokenMalformed},
		{"bad base64", "!!!." + parts[1] + "." + parts[2], jwt.ErrTokenMalformed},
		{"header not json", b64("nope") + "." + parts[1] + "." + parts[2], jwt.ErrTokenMalformed},
		{"Bearer prefix kept", "Bearer " + minted, jwt.ErrTokenMalformed},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			p, err := v.Verify(testCtx(t, 5*time.Second), tc.tok)
			sub := p.Subject
			if err == nil {
				t.Fatalf("Verify accepted it as %q", sub)
			}
			if sub != "" {
				t.Errorf("Verify returned sub %q with error %v", sub, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("rejection took %v", el)
			}
		})
	}
}

// Guarantee 4: once the keys are loaded, the filter keeps verifying with them while the JWKS
// endpoint is down, through failed background refreshes.
func TestVerifyWithCachedKeysWhenJWKSDown(t *testing.T) {
	i := newIDP(t)
	v := newVerifier(t, i.url, 50*time.Millisecond)
	first, _ := i.p.Mint("viewer-1", false, time.Hour)
	if p, err := v.Verify(testCtx(t, 5*time.Second), first); err != nil || p.Subject != "viewer-1" {
		t.Fatalf("first Verify = %q, %v", p.Subject, err)
	}

	// First an endpoint that answers 503, then none at all.
	i.down.Store(true)
	before := i.hits.Load()
	deadline := time.Now().Add(5 * time.Second)
	for i.hits.Load() < before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if i.hits.Load() < before+2 {
		t.Fatal("no background refresh reached the failing JWKS endpoint")
	}
	second, _ := i.p.Mint("viewer-2", false, time.Hour)
	if p, err := v.Verify(testCtx(t, 5*time.Second), second); err != nil || p.Subject != "viewer-2" {
		t.Fatalf("Verify with JWKS answering 503 = %q, %v; want the cached key to verify", p.Subject, err)
	}

	i.srv.Close()
	time.Sleep(200 * time.Millisecond) // several refresh ticks against a closed port
	third, _ := i.p.Mint("viewer-3", false, time.Hour)
	if p, err := v.Verify(testCtx(t, 5*time.Second), third); err != nil || p.Subject != "viewer-3" {
		t.Fatalf("Verify with JWKS gone = %q, %v; want the cached key to verify", p.Subject, err)
	}
	// A token from an unknown key still fails, and promptly.
	stranger, _ := devidp.New(issuer, audience)
	tok, _ := stranger.Mint("viewer-4", false, time.Hour)
	start := time.Now()
	if p, err := v.Verify(testCtx(t, 5*time.Second), tok); err == nil {
		t.Fatalf("unknown key accepted as %q", p.Subject)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("unknown-kid rejection took %v", el)
	}
}

// JWKS unreachable from the start: Verify fails with an error, no panic, no hang.
func TestVerifyJWKSUnreachable(t *testing.T) {
	p, err := devidp.New(issuer, audience)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := p.Mint("viewer-1", false, time.Hour)

	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + l.Addr().String() + "/.well-known/jwks.json"
		l.Close()
		v := newVerifier(t, url, time.Hour)
		start := time.Now()
		p, err := v.Verify(testCtx(t, 3*time.Second), tok)
		sub := p.Subject
		if err == nil || sub != "" {
			t.Fatalf("Verify = %q, %v; want an error", sub, err)
		}
		if el := time.Since(start); el > 3500*time.Millisecond {
			t.Errorf("Verify took %v, beyond its 3 s deadline", el)
		}
	})

	t.Run("server never answers", func(t *testing.T) {
		// Accepts connections and never writes: the background fetch hangs on its own
		// timeout, Verify must give up at the caller's deadline.
		v := newVerifier(t, silentJWKS(t), time.Hour)
		start := time.Now()
		p, err := v.Verify(testCtx(t, 300*time.Millisecond), tok)
		sub := p.Subject
		if err == nil || sub != "" {
			t.Fatalf("Verify = %q, %v; want an error", sub, err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("Verify took %v with a 300 ms deadline", el)
		}
	})
}

// An identity provider that is down when Envoy starts must not break verification for good:
// once it answers, the first token with its kid loads the keys.
func TestVerifyRecoversWhenJWKSComesUp(t *testing.T) {
	i := newIDP(t)
	i.down.Store(true)
	v := newVerifier(t, i.url, time.Hour)
	deadline := time.Now().Add(5 * time.Second)
	for i.hits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if i.hits.Load() == 0 {
		t.Fatal("the initial JWKS fetch never happened")
	}
	// Let the failed initial load finish before the endpoint recovers.
	if _, err := v.keys.keyfunc(testCtx(t, 5*time.Second)); err != nil {
		t.Logf("initial load reported: %v", err)
	}
	i.down.Store(false)
	tok, _ := i.p.Mint("viewer-1", false, time.Hour)
	if p, err := v.Verify(testCtx(t, 5*time.Second), tok); err != nil || p.Subject != "viewer-1" {
		t.Fatalf("Verify after the JWKS came up = %q, %v", p.Subject, err)
	}
}

// Identify returns the subject and the permissions claim, as Auth0 RBAC puts it in access
// tokens (a list) or as some tenants do (a space-separated string), under a configurable name.
func TestIdentify(t *testing.T) {
	i := newIDP(t)
	v := newVerifier(t, i.url, time.Hour)
	key, kid := i.p.Key(), i.p.KeyID()

	admin, err := i.p.Mint("auth0|admin-1", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(testCtx(t, 5*time.Second), admin)
	if err != nil || id.Subject != "auth0|admin-1" || strings.Join(id.Permissions, ",") != "vote,"+contract.PermAdmin+",openid" {
		t.Fatalf("Identify(admin) = %+v, %v", id, err)
	}
	// The scope's "openid vote" merges in without repeating "vote".
	if !id.Has(contract.PermAdmin) || !id.Has("vote") || id.Has("admin") || id.Has("") {
		t.Errorf("Has on %v is wrong", id.Permissions)
	}
	viewer, _ := i.p.Mint("auth0|viewer-1", false, time.Hour)
	if id, err := v.Verify(testCtx(t, 5*time.Second), viewer); err != nil || id.Has(contract.PermAdmin) {
		t.Errorf("Identify(viewer) = %+v, %v; want no admin permission", id, err)
	}

	with := func(edit func(c jwt.MapClaims)) string {
		c := claims("u-1")
		edit(c)
		return sign(t, jwt.SigningMethodRS256, key, kid, c)
	}
	tests := []struct {
		name, claim, tok string
		want             []string
	}{
		{"string claim", "permissions", with(func(c jwt.MapClaims) { c["permissions"] = " read:results  admin:elections " }),
			[]string{"read:results", "admin:elections"}},
		{"no claim", "permissions", with(func(c jwt.MapClaims) {}), nil},
		{"claim of another type", "permissions", with(func(c jwt.MapClaims) { c["permissions"] = 7 }), nil},
		{"non-strings skipped", "permissions", with(func(c jwt.MapClaims) { c["permissions"] = []any{"a", 1, true, "b"} }),
			[]string{"a", "b"}},
		{"custom claim", "https://tvvote.test/roles", with(func(c jwt.MapClaims) {
			c["https://tvvote.test/roles"] = []string{"admin:elections"}
			c["permissions"] = []string{"vote"}
		}), []string{"admin:elections"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v.PermissionsClaim = tc.claim
			defer func() { v.PermissionsClaim = "permissions" }()
			id, err := v.Verify(testCtx(t, 5*time.Second), tc.tok)
			if err != nil || id.Subject != "u-1" {
				t.Fatalf("Identify = %+v, %v", id, err)
			}
			if strings.Join(id.Permissions, "|") != strings.Join(tc.want, "|") {
				t.Errorf("permissions = %q, want %q", id.Permissions, tc.want)
			}
		})
	}

	// The home-region claim is read only when named, and only as a string.
	homed := with(func(c jwt.MapClaims) { c["https://tvvote.test/home_region"] = "us-east-1" })
	if id, err := v.Verify(testCtx(t, 5*time.Second), homed); err != nil || id.HomeRegion != "" {
		t.Errorf("home region read without HomeRegionClaim: %+v, %v", id, err)
	}
	v.HomeRegionClaim = "https://tvvote.test/home_region"
	if id, err := v.Verify(testCtx(t, 5*time.Second), homed); err != nil || id.HomeRegion != "us-east-1" {
		t.Errorf("home region claim: %+v, %v", id, err)
	}
	if id, err := v.Verify(testCtx(t, 5*time.Second), with(func(c jwt.MapClaims) { c["https://tvvote.test/home_region"] = 7 })); err != nil || id.HomeRegion != "" {
		t.Errorf("home region claim of another type: %+v, %v", id, err)
	}
	v.HomeRegionClaim = ""

	// A refused token yields no identity at all.
	expired := with(func(c jwt.MapClaims) {
		c["iat"], c["nbf"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		c["permissions"] = []string{contract.PermAdmin}
	})
	if id, err := v.Verify(testCtx(t, 5*time.Second), expired); err == nil || id.Subject != "" || id.Permissions != nil {
		t.Errorf("expired admin token: %+v, %v", id, err)
	}
}

// Reason names the failed check for the stats, from the errors Identify returns.
func TestReason(t *testing.T) {
	i := newIDP(t)
	v := newVerifier(t, i.url, time.Hour)
	key, kid := i.p.Key(), i.p.KeyID()
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Now()
	with := func(edit func(c jwt.MapClaims)) jwt.MapClaims {
		c := claims("u-1")
		edit(c)
		return c
	}
	tests := []struct{ name, tok, want string }{
		{"malformed", "not a jwt", "malformed"},
		{"signature", sign(t, jwt.SigningMethodRS256, other, kid, claims("u-1")), "signature"},
		{"expired", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		})), "expired"},
		{"not yet valid", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), "not_yet_valid"},
		{"issuer", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["iss"] = "https://evil/" })), "claims"},
		{"audience", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { c["aud"] = "other" })), "claims"},
		{"no exp", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { delete(c, "exp") })), "claims"},
		{"no sub", sign(t, jwt.SigningMethodRS256, key, kid, with(func(c jwt.MapClaims) { delete(c, "sub") })), "invalid"},
	}
	for _, tc := range tests {
		_, err := v.Verify(testCtx(t, 5*time.Second), tc.tok)
		if got := Reason(err); err == nil || got != tc.want {
			t.Errorf("%s: Reason(%v) = %q, want %q", tc.name, err, got, tc.want)
		}
	}
	if Reason(nil) != "" {
		t.Error("Reason(nil) is not empty")
	}

	// The JWKS has not loaded by the caller's deadline: "jwks_unavailable".
	silent := newVerifier(t, silentJWKS(t), time.Hour)
	tok, _ := i.p.Mint("u-1", false, time.Hour)
	if _, err := silent.Verify(testCtx(t, 200*time.Millisecond), tok); Reason(err) != "jwks_unavailable" {
		t.Errorf("JWKS not loaded: Reason(%v) = %q, want jwks_unavailable", err, Reason(err))
	}
}

// silentJWKS is the URL of a JWKS server that accepts connections and never answers.
func silentJWKS(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return "http://" + l.Addr().String() + "/.well-known/jwks.json"
}
