package votefilter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/devidp"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/dedup/dedupfake"
)

// BenchmarkAdmission is one fresh viewer's vote through the admission code, as the filter runs
// it (Check, then Commit), with a real RS256 token verified against a JWKS and in-memory fakes
// for Redis and SQS: the CPU and the allocations per vote that are the filter's own, without
// Envoy, the network or the clients' I/O.
func BenchmarkAdmission(b *testing.B) {
	idp, err := devidp.New("https://idp.test/", "votes")
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(idp.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := testConfig()
	v := auth.NewVerifier(auth.NewJWKS(ctx, srv.URL+"/.well-known/jwks.json", time.Hour), cfg.JWT.Issuer, cfg.JWT.Audience, 30*time.Second)
	tokens := make([]string, b.N)
	for i := range tokens {
		if tokens[i], err = idp.Mint(fmt.Sprintf("auth0|bench-%d", i), false, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	a, err := NewAdmitter(cfg, v, dedupfake.New(duringVote, dedup.Options{}), &fakeQueue{}, captcha.StaticKey(testSecret))
	if err != nil {
		b.Fatal(err)
	}
	a.now = func() time.Time { return duringVote }
	// The production handler, writing nowhere: the log line's formatting is part of a vote.
	a.Log = slog.New(slog.NewJSONHandler(io.Discard, nil))
	req := goodRequest()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		req.Authorization = "Bearer " + tokens[i]
		if r := admit(a, context.Background(), req); r.Status != 200 {
			b.Fatalf("vote %d: %d %s", i, r.Status, r.Body)
		}
	}
}
