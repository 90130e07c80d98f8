package votefilter

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devidp"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/dedup/dedupfake"
)

// ackQueue acknowledges every vote at once and keeps nothing, as a remote SQS would look from
// here.
type ackQueue struct{}

func (ackQueue) Enqueue(context.Context, contract.QueuedVote) error { return nil }

// BenchmarkAdmitVote is one admitted vote of a fresh viewer through the admission code the edge
// runs (Check, then Commit): the real RS256 verifier against a local JWKS, the in-memory store
// and an acknowledging queue in place of Redis and SQS. allocs/op is the figure to watch; the
// tokens are minted beforehand, one per vote, so give an iteration count:
//
//	go test -run '^$' -bench AdmitVote -benchtime 2000x ./filters/votefilter/
func BenchmarkAdmitVote(b *testing.B) {
	cfg := testConfig()
	p, err := devidp.New(cfg.JWT.Issuer, cfg.JWT.Audience)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(p.Handler())
	b.Cleanup(srv.Close)
	v := auth.NewVerifier(auth.NewJWKS(b.Context(), srv.URL+"/.well-known/jwks.json", time.Hour),
		cfg.JWT.Issuer, cfg.JWT.Audience, 30*time.Second)
	adm, err := NewAdmitter(cfg, v, dedupfake.New(duringVote, dedup.Options{}), ackQueue{}, captcha.StaticKey(testSecret))
	if err != nil {
		b.Fatal(err)
	}
	adm.now = func() time.Time { return duringVote }
	adm.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	toks, err := p.MintMany(b.N+1, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	reqs := make([]Request, len(toks))
	body := []byte(`{"electionId":"` + testElection + `","candidateId":"` + testCandidate + `","captchaToken":"` + goodCaptcha + `"}`)
	for i, t := range toks {
		reqs[i] = Request{Authorization: "Bearer " + t, ContentType: "application/json", RequestID: testRequestID,
			ClientIP: testIP, Body: body}
	}
	vote := func(r Request) {
		ballot, rej := adm.Check(context.Background(), r)
		if rej != nil {
			b.Fatalf("Check: %v", rej)
		}
		if resp := adm.Commit(context.Background(), ballot); resp.Status != 200 {
			b.Fatalf("Commit: %d %s", resp.Status, resp.Body)
		}
	}
	vote(reqs[b.N]) // loads the key set
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		vote(reqs[i])
	}
}
