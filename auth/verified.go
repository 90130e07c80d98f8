package auth

import (
	"context"
	"crypto/rsa"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// verifiedClaims returns the claims of raw once its signature, issuer, audience and times are
// good.
func (v *Verifier) verifiedClaims(ctx context.Context, raw string) (jwt.MapClaims, error) {
	kf, err := v.keys.keyfunc(ctx)
	if err != nil {
		return nil, err
	}
	claims, _, _, err := v.verifyToken(raw, kf.KeyfuncCtx(ctx))
	return claims, err
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
