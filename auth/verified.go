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

// tokenCacheSize bounds the verified tokens a verifier remembers. A viewer presents one token
// for the challenge, the vote and the status within seconds; a few seconds of an edge's
// distinct viewers fit. An entry holds the token's decoded claims (about 1 KiB).
const tokenCacheSize = 16384

// verifiedClaims returns the claims of raw once its signature, issuer, audience and times are
// good. A token verified before is answered from the cache when the key set still holds the
// key that verified it and its claims still pass the same validator at the current time, so
// the cache accepts nothing the full check would refuse.
func (v *Verifier) verifiedClaims(ctx context.Context, raw string) (jwt.MapClaims, error) {
	kf, err := v.keys.keyfunc(ctx)
	if err != nil {
		return nil, err
	}
	keyOf := kf.KeyfuncCtx(ctx)
	var id [sha256.Size]byte
	if v.cache != nil {
		v.cache.dropRemovedKeys(ctx, kf, v.now())
		id = sha256.Sum256([]byte(raw))
		if e, ok := v.cache.lru.Get(id); ok {
			if e.stillValid(keyOf, v.validator) {
				return e.claims, nil
			}
			v.cache.lru.Remove(id)
		}
	}
	claims, header, key, err := v.verifyToken(raw, keyOf)
	if err != nil {
		return nil, err
	}
	// Only tokens naming their key are remembered: without a kid every key was tried.
	if _, named := header["kid"].(string); v.cache != nil && key != nil && named {
		v.cache.lru.Add(id, &cachedToken{claims: claims, header: &jwt.Token{Header: header}, key: key})
	}
	return claims, nil
}

// verifyToken is the full check, in golang-jwt's order and with its errors: decode, RS256 only,
// the key from the key set (one by kid, or every key without one), the signature, the claims.
// It returns the key that verified a token naming one.
func (v *Verifier) verifyToken(raw string, keyOf jwt.Keyfunc) (jwt.MapClaims, map[string]any, *rsa.PublicKey, error) {
	claims := jwt.MapClaims{}
	tok, parts, err := v.parser.ParseUnverified(raw, claims)
	if err != nil {
		return nil, nil, nil, err
	}
	if alg := tok.Method.Alg(); alg != jwt.SigningMethodRS256.Alg() {
		return nil, nil, nil, fmt.Errorf("%w: signing method %v is invalid", jwt.ErrTokenSignatureInvalid, alg)
	}
	got, err := keyOf(tok)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: error while executing keyfunc: %w", jwt.ErrTokenUnverifiable, err)
	}
	signed := raw[:len(parts[0])+1+len(parts[1])]
	var used *rsa.PublicKey
	switch have := got.(type) {
	case jwt.VerificationKeySet:
		if len(have.Keys) == 0 {
			return nil, nil, nil, fmt.Errorf("%w: keyfunc returned empty verification key set", jwt.ErrTokenUnverifiable)
		}
		for _, k := range have.Keys {
			if err = v.keys.prepared.verifyRS256(signed, tok.Signature, k); err == nil {
				break
			}
		}
	default:
		if err = v.keys.prepared.verifyRS256(signed, tok.Signature, have); err == nil {
			used, _ = have.(*rsa.PublicKey)
		}
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %w", jwt.ErrTokenSignatureInvalid, err)
	}
	if err := v.validator.Validate(claims); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %w", jwt.ErrTokenInvalidClaims, err)
	}
	return claims, tok.Header, used, nil
}

// tokenCache remembers tokens that passed the full check, by the SHA-256 of the whole token.
type tokenCache struct {
	lru *lru.Cache[[sha256.Size]byte, *cachedToken]
	// The key set is compared with the last one seen at most once per keyCheckEvery; entries
	// whose key left it are dropped then.
	nextKeyCheck atomic.Int64
	mu           sync.Mutex // one key check at a time; guards keys
	keys         []*rsa.PublicKey
}

const keyCheckEvery = time.Second

type cachedToken struct {
	claims jwt.MapClaims
	// header carries the token's kid and alg, to ask the key set for its key again.
	header *jwt.Token
	key    *rsa.PublicKey
}

func newTokenCache(size int) *tokenCache {
	c, err := lru.New[[sha256.Size]byte, *cachedToken](size)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return &tokenCache{lru: c}
}

// stillValid asks the key set for the token's key as the full check would (same kid, alg and
// refresh rules) and runs the claims through the same validator, at the current time: expiry
// and leeway work exactly as for a token seen for the first time.
func (e *cachedToken) stillValid(keyOf jwt.Keyfunc, validator *jwt.Validator) bool {
	got, err := keyOf(e.header)
	if err != nil {
		return false
	}
	pub, ok := got.(*rsa.PublicKey)
	// A refresh parses new key objects: the same key material still counts as the same key.
	return ok && (pub == e.key || pub.Equal(e.key)) && validator.Validate(e.claims) == nil
}

// dropRemovedKeys removes the entries verified with a key that is no longer in the key set, once
// the set is seen to have changed. Entries are never answered for a removed key anyway
// (stillValid); this frees them at once instead of when they age out.
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
		if e, ok := c.lru.Peek(id); ok && !slices.ContainsFunc(keys, func(k *rsa.PublicKey) bool { return k.Equal(e.key) }) {
			c.lru.Remove(id)
		}
	}
}
