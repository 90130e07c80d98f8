package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// keySet is a JWKS endpoint whose keys a test changes; fetches counts the requests.
type keySet struct {
	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	fetches atomic.Int64
	url     string
}

func newKeySet(t *testing.T, keys map[string]*rsa.PublicKey) *keySet {
	t.Helper()
	s := &keySet{keys: keys}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		var doc struct {
			Keys []map[string]string `json:"keys"`
		}
		for kid, k := range s.keys {
			doc.Keys = append(doc.Keys, map[string]string{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
				"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
				"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())})
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL + "/.well-known/jwks.json"
	return s
}

func (s *keySet) set(keys map[string]*rsa.PublicKey) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

// refreshed waits until the verifier's background refresh fetched the key set twice more.
func (s *keySet) refreshed(t *testing.T) {
	t.Helper()
	want := s.fetches.Load() + 2
	deadline := time.Now().Add(10 * time.Second)
	for s.fetches.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.fetches.Load() < want {
		t.Fatal("the key set was not fetched again")
	}
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// clock is a settable time for the verifier and its validator.
type clock struct{ t atomic.Pointer[time.Time] }

func (c *clock) now() time.Time      { return *c.t.Load() }
func (c *clock) set(t time.Time)     { c.t.Store(&t) }
func (c *clock) add(d time.Duration) { c.set(c.now().Add(d)) }

func cached(v *Verifier, tok string) bool { return v.cache.lru.Contains(sha256.Sum256([]byte(tok))) }

// Around exp, nbf and iat (each with the leeway), the verifier with its cache and one without
// any give the same answer at every instant, and an entry past its time is dropped.
func TestTokenCacheExpiryFollowsTheUncachedCheck(t *testing.T) {
	key := rsaKey(t)
	ks := newKeySet(t, map[string]*rsa.PublicKey{"k1": &key.PublicKey})
	withCache, without := newVerifier(t, ks.url, time.Hour), newVerifier(t, ks.url, time.Hour)
	without.cache = nil
	var c clock
	withCache.now, without.now = c.now, c.now

	t0 := time.Unix(time.Now().Unix(), 0)
	exp, nbf, iat := t0.Add(time.Minute), t0.Add(-time.Minute), t0.Add(-time.Minute)
	tok := sign(t, jwt.SigningMethodRS256, key, "k1", jwt.MapClaims{
		"iss": issuer, "aud": audience, "sub": "viewer-1",
		"iat": iat.Unix(), "nbf": nbf.Unix(), "exp": exp.Unix(),
	})
	c.set(t0)
	if _, err := withCache.Verify(context.Background(), tok); err != nil || !cached(withCache, tok) {
		t.Fatalf("first Verify = %v, cached %v", err, cached(withCache, tok))
	}
	for _, at := range []time.Time{
		t0, exp, exp.Add(leeway - time.Nanosecond), exp.Add(leeway), exp.Add(leeway + time.Nanosecond),
		// A clock stepped back before nbf and iat, with and without the leeway.
		nbf, nbf.Add(-leeway), nbf.Add(-leeway - time.Nanosecond), t0,
	} {
		c.set(at)
		_, errCached := withCache.Verify(context.Background(), tok)
		_, errFull := without.Verify(context.Background(), tok)
		if (errCached == nil) != (errFull == nil) || Reason(errCached) != Reason(errFull) {
			t.Errorf("at %v: cached %v, full check %v", at.Sub(t0), errCached, errFull)
		}
		if errCached != nil && cached(withCache, tok) {
			t.Errorf("at %v: refused but still cached", at.Sub(t0))
		}
	}
	c.set(exp.Add(leeway))
	if _, err := withCache.Verify(context.Background(), tok); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("past exp + leeway: %v, want ErrTokenExpired", err)
	}
}

// A key that leaves the key set takes its cached tokens with it; a kid reused for a new key
// does not let tokens of the old key through.
func TestTokenCacheDropsRemovedKeys(t *testing.T) {
	a, b := rsaKey(t), rsaKey(t)
	ks := newKeySet(t, map[string]*rsa.PublicKey{"a": &a.PublicKey, "b": &b.PublicKey})
	v := newVerifier(t, ks.url, 50*time.Millisecond)
	var c clock
	c.set(time.Now())
	v.now = c.now
	ctx := context.Background()
	tokA := sign(t, jwt.SigningMethodRS256, a, "a", claims("viewer-a"))
	tokB := sign(t, jwt.SigningMethodRS256, b, "b", claims("viewer-b"))
	for _, tok := range []string{tokA, tokB} {
		if _, err := v.Verify(ctx, tok); err != nil || !cached(v, tok) {
			t.Fatalf("Verify = %v, cached %v", err, cached(v, tok))
		}
	}

	ks.set(map[string]*rsa.PublicKey{"b": &b.PublicKey})
	ks.refreshed(t)
	c.add(2 * keyCheckEvery)
	if _, err := v.Verify(ctx, tokB); err != nil {
		t.Fatalf("token of the remaining key: %v", err)
	}
	if cached(v, tokA) || !cached(v, tokB) {
		t.Errorf("after a key left: cached a %v (want false), b %v (want true)", cached(v, tokA), cached(v, tokB))
	}
	if _, err := v.Verify(ctx, tokA); err == nil {
		t.Error("token of the removed key accepted")
	}

	// The kid "b" now names another key: the cached token signed by the old b is refused at
	// once, before the key check drops it.
	other := rsaKey(t)
	ks.set(map[string]*rsa.PublicKey{"b": &other.PublicKey})
	ks.refreshed(t)
	if _, err := v.Verify(ctx, tokB); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		t.Errorf("token of the replaced key: %v, want ErrTokenSignatureInvalid", err)
	}
	if cached(v, tokB) {
		t.Error("token of the replaced key still cached")
	}
	tokNew := sign(t, jwt.SigningMethodRS256, other, "b", claims("viewer-c"))
	if p, err := v.Verify(ctx, tokNew); err != nil || p.Subject != "viewer-c" {
		t.Errorf("token of the new key: %+v, %v", p, err)
	}
}

// A refresh that returns the same keys keeps the cached tokens: they are the same keys.
func TestTokenCacheSurvivesARefreshOfTheSameKeys(t *testing.T) {
	a := rsaKey(t)
	ks := newKeySet(t, map[string]*rsa.PublicKey{"a": &a.PublicKey})
	v := newVerifier(t, ks.url, 50*time.Millisecond)
	var c clock
	c.set(time.Now())
	v.now = c.now
	tok := sign(t, jwt.SigningMethodRS256, a, "a", claims("viewer-a"))
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	ks.refreshed(t)
	c.add(2 * keyCheckEvery)
	if _, err := v.Verify(context.Background(), tok); err != nil || !cached(v, tok) {
		t.Errorf("after a refresh: %v, cached %v", err, cached(v, tok))
	}
}

// The cache holds at most its size; tokens beyond it still verify. Refused tokens and tokens
// without a kid are never cached.
func TestTokenCacheBoundAndWhatItHolds(t *testing.T) {
	key := rsaKey(t)
	ks := newKeySet(t, map[string]*rsa.PublicKey{"k": &key.PublicKey})
	v := newVerifier(t, ks.url, time.Hour)
	v.cache = newTokenCache(4)
	ctx := context.Background()
	var toks []string
	for i := range 10 {
		tok := sign(t, jwt.SigningMethodRS256, key, "k", claims("viewer-"+strconv.Itoa(i)))
		toks = append(toks, tok)
		if p, err := v.Verify(ctx, tok); err != nil || p.Subject != "viewer-"+strconv.Itoa(i) {
			t.Fatalf("Verify %d = %+v, %v", i, p, err)
		}
		if n := v.cache.lru.Len(); n > 4 {
			t.Fatalf("%d tokens cached, bound 4", n)
		}
	}
	if !cached(v, toks[9]) || cached(v, toks[0]) {
		t.Error("the least recently used token was not the one evicted")
	}
	for i, tok := range toks {
		if p, err := v.Verify(ctx, tok); err != nil || p.Subject != "viewer-"+strconv.Itoa(i) {
			t.Errorf("Verify %d again = %+v, %v", i, p, err)
		}
	}

	expired := claims("viewer-x")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	noKid := sign(t, jwt.SigningMethodRS256, key, "", claims("viewer-y"))
	for _, tok := range []string{sign(t, jwt.SigningMethodRS256, key, "k", expired), noKid, "not a jwt"} {
		v.Verify(ctx, tok)
		if cached(v, tok) {
			t.Errorf("%.20s… cached", tok)
		}
	}
	if p, err := v.Verify(ctx, noKid); err != nil || p.Subject != "viewer-y" {
		t.Errorf("token without kid: %+v, %v", p, err)
	}
}

// The same tampered bytes are refused however often they come, also after the genuine token
// was cached: the cache is keyed by the whole token.
func TestTokenCacheKeyedByTheWholeToken(t *testing.T) {
	key := rsaKey(t)
	ks := newKeySet(t, map[string]*rsa.PublicKey{"k": &key.PublicKey})
	v := newVerifier(t, ks.url, time.Hour)
	tok := sign(t, jwt.SigningMethodRS256, key, "k", claims("viewer-1"))
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	mid := len(tok) - 20
	flipped := tok[:mid] + string("BA"[min(1, int(tok[mid]-'A'))]) + tok[mid+1:]
	for _, bad := range []string{flipped, tok + "A", " " + tok, tok[:len(tok)-1]} {
		for range 2 {
			if p, err := v.Verify(context.Background(), bad); err == nil {
				t.Errorf("altered token accepted as %q", p.Subject)
			}
		}
	}
}
