package auth

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// benchTokens are n tokens of distinct viewers and a verifier with their key set loaded.
func benchTokens(b *testing.B, n int) (*Verifier, []string) {
	i := newIDP(b)
	v := NewVerifier(NewJWKS(b.Context(), i.url, time.Hour), issuer, audience, leeway)
	toks := make([]string, n)
	for k := range toks {
		toks[k], _ = i.p.Mint("viewer-"+strconv.Itoa(k), false, time.Hour)
	}
	if _, err := v.Verify(context.Background(), toks[0]); err != nil {
		b.Fatal(err)
	}
	return v, toks
}

// BenchmarkVerify: every call pays the whole check, as votes of distinct viewers do (the cache
// is off so that the tokens, reused by the loop, are checked each time).
func BenchmarkVerify(b *testing.B) {
	v, toks := benchTokens(b, 256)
	v.cache = nil
	ctx := context.Background()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := v.Verify(ctx, toks[n%len(toks)]); err != nil {
			b.Fatal(err)
		}
		n++
	}
}

// BenchmarkVerifyGolangJWT is the same check through golang-jwt's own parse and crypto/rsa, as
// the verifier did before keeping prepared keys: the figure to compare BenchmarkVerify with.
func BenchmarkVerifyGolangJWT(b *testing.B) {
	v, toks := benchTokens(b, 256)
	ctx := context.Background()
	kf, err := v.keys.keyfunc(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := v.parser.ParseWithClaims(toks[n%len(toks)], jwt.MapClaims{}, kf.KeyfuncCtx(ctx)); err != nil {
			b.Fatal(err)
		}
		n++
	}
}

// BenchmarkVerifyCached: the same viewer's token again (challenge, vote, status).
func BenchmarkVerifyCached(b *testing.B) {
	v, toks := benchTokens(b, 256)
	ctx := context.Background()
	for _, t := range toks {
		if _, err := v.Verify(ctx, t); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := v.Verify(ctx, toks[n%len(toks)]); err != nil {
			b.Fatal(err)
		}
		n++
	}
}
