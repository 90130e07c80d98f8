package auth

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
)

// tokenCacheSize bounds the verified signatures a verifier remembers. A viewer presents one
// token for the vote and then the status within seconds; a few seconds of an edge's distinct
// viewers fit. An entry is the token's hash and a pointer to its key: next to nothing for the
// garbage collector to scan (keeping the decoded claims instead cost the edge about 5 % of its
// CPU in marking when every vote is a new viewer's).
const tokenCacheSize = 16384

// verifiedClaims returns the claims of raw once its signature, issuer, audience and times are
// good.
func (v *Verifier) verifiedClaims(ctx context.Context, raw string) (jwt.MapClaims, error) {
	kf, err := v.keys.keyfunc(ctx)
	if err != nil {
		return nil, err
	}
	if v.cache != nil {
		v.cache.dropRemovedKeys(ctx, kf, v.now())
	}
	return v.verifyToken(raw, kf.KeyfuncCtx(ctx))
}

// verifyToken is the full check, in golang-jwt's order and with its errors: decode, RS256 only,
// the key from the key set (one by kid, or every key without one), the signature, the claims.
// Only the signature check may be skipped: when these very bytes were verified before with
// the key the key set now gives for their kid. Decoding, the choice of the key and the claims
// (exp, nbf and iat with the leeway, at the current time) are checked on every call, so a
// remembered token is refused whenever the full check would refuse it.
func (v *Verifier) verifyToken(raw string, keyOf jwt.Keyfunc) (jwt.MapClaims, error) {
	claims := jwt.MapClaims{}
	tok, parts, err := v.parser.ParseUnverified(raw, claims)
	if err != nil {
		return nil, err
	}
	if alg := tok.Method.Alg(); alg != jwt.SigningMethodRS256.Alg() {
		return nil, fmt.Errorf("%w: signing method %v is invalid", jwt.ErrTokenSignatureInvalid, alg)
	}
	got, err := keyOf(tok)
	if err != nil {
		return nil, fmt.Errorf("%w: error while executing keyfunc: %w", jwt.ErrTokenUnverifiable, err)
	}
	signed := raw[:len(parts[0])+1+len(parts[1])]
	// Only tokens naming their key are remembered: without a kid every key is tried.
	_, named := tok.Header["kid"].(string)
	var (
		id       [sha256.Size]byte
		hashed   bool
		remember *rsa.PublicKey
	)
	switch have := got.(type) {
	case jwt.VerificationKeySet:
		if len(have.Keys) == 0 {
			return nil, fmt.Errorf("%w: keyfunc returned empty verification key set", jwt.ErrTokenUnverifiable)
		}
		for _, k := range have.Keys {
			if err = v.keys.prepared.verifyRS256(signed, tok.Signature, k); err == nil {
				break
			}
		}
	default:
		pub, isRSA := have.(*rsa.PublicKey)
		if v.cache == nil || !named || !isRSA {
			err = v.keys.prepared.verifyRS256(signed, tok.Signature, have)
			break
		}
		id, hashed = sha256.Sum256([]byte(raw)), true
		if !v.cache.verifiedWith(id, pub) {
			if err = v.keys.prepared.verifyRS256(signed, tok.Signature, pub); err == nil {
				remember = pub
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", jwt.ErrTokenSignatureInvalid, err)
	}
	if err := v.validator.Validate(claims); err != nil {
		if hashed {
			v.cache.lru.Remove(id) // expired, most likely: it will not be good again
		}
		return nil, fmt.Errorf("%w: %w", jwt.ErrTokenInvalidClaims, err)
	}
	if remember != nil {
		v.cache.lru.Add(id, remember)
	}
	return claims, nil
}

// tokenCache remembers which key verified the signature of a token that passed the full check,
// by the SHA-256 of the whole token.
type tokenCache struct {
	lru *lru.Cache[[sha256.Size]byte, *rsa.PublicKey]
	// The key set is compared with the last one seen at most once per keyCheckEvery; entries
	// whose key left it are dropped then.
	nextKeyCheck atomic.Int64
	mu           sync.Mutex // one key check at a time; guards keys
	keys         []*rsa.PublicKey
}

const keyCheckEvery = time.Second

func newTokenCache(size int) *tokenCache {
	c, err := lru.New[[sha256.Size]byte, *rsa.PublicKey](size)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return &tokenCache{lru: c}
}

// verifiedWith reports whether the token hashed to id was verified with pub's key material (a
// refresh of the key set parses new key objects for the same keys). An entry of another key is
// dropped: that token now needs the full check.
func (c *tokenCache) verifiedWith(id [sha256.Size]byte, pub *rsa.PublicKey) bool {
	k, ok := c.lru.Get(id)
	if !ok {
		return false
	}
	if k == pub || k.Equal(pub) {
		return true
	}
	c.lru.Remove(id)
	return false
}

// dropRemovedKeys removes the entries verified with a key that is no longer in the key set, once
// the set is seen to have changed. Entries of a removed key are never used anyway (the key set
// no longer gives that key); this frees them at once instead of when they age out.
func (c *tokenCache) dropRemovedKeys(ctx context.Context, kf keyfunc.Keyfunc, now time.Time) {
	next := c.nextKeyCheck.Load()
	if now.UnixNano() < next || !c.nextKeyCheck.CompareAndSwap(next, now.Add(keyCheckEvery).UnixNano()) {
		return
	}
	set, err := kf.VerificationKeySet(ctx)
	if err != nil {
		return
	}
	var keys []*rsa.PublicKey
	for _, k := range set.Keys {
		if pub, ok := k.(*rsa.PublicKey); ok {
			keys = append(keys, pub)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.EqualFunc(keys, c.keys, func(a, b *rsa.PublicKey) bool { return a.Equal(b) }) {
		return
	}
	c.keys = keys
	for _, id := range c.lru.Keys() {
		if k, ok := c.lru.Peek(id); ok && !slices.ContainsFunc(keys, func(x *rsa.PublicKey) bool { return x.Equal(k) }) {
			c.lru.Remove(id)
		}
	}
}
