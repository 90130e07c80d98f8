package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/dedup/dedupfake"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/filters/votefilter/enqueue/enqueuefake"
)

const (
	election  = "3f1c2a9e-8b4d-4c6e-9f0a-1b2c3d4e5f60"
	candidate = "a0b1c2d3-e4f5-4a6b-8c7d-8e9f0a1b2c3d"
)

type verifier struct{}

func (verifier) Verify(_ context.Context, tok string) (auth.Principal, error) {
	if tok != "good" {
		return auth.Principal{}, errors.New("bad token")
	}
	return auth.Principal{Subject: "auth0|viewer"}, nil
}

func newServer(t *testing.T) (*httptest.Server, *enqueuefake.Queue, *dedupfake.Gate) {
	t.Helper()
	now := time.Now().UTC()
	cfg := &edgeconfig.Config{Region: "bench", MaxBodyBytes: 512, EnqueueTimeoutMs: 5000,
		Elections: []edgeconfig.Election{{ID: election, Status: "ACTIVE", StartDate: now.Add(-time.Hour),
			EndDate: now.Add(time.Hour), CandidateIDs: []string{candidate}}},
		Captcha: edgeconfig.CaptchaConfig{Mode: edgeconfig.CaptchaOff}}
	q, g := &enqueuefake.Queue{}, dedupfake.New(now, dedup.Options{})
	adm, err := votefilter.NewAdmitter(cfg, verifier{}, g, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	adm.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httptest.NewServer(handler(adm, cfg.MaxBodyBytes))
	t.Cleanup(srv.Close)
	return srv, q, g
}

func post(t *testing.T, url, token, body string, header ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+contract.PathVotes, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

const vote = `{"electionId":"` + election + `","candidateId":"` + candidate + `","captchaToken":"captcha-is-off-in-this-test"}`

// The service answers as the filter does: 200 once queued, then 409 for the same viewer.
func TestVoteThenDuplicate(t *testing.T) {
	srv, q, g := newServer(t)
	if resp := post(t, srv.URL, "good", vote, "X-Forwarded-For", "198.51.100.1, 203.0.113.7"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first vote: %d, want 200", resp.StatusCode)
	}
	if sent := q.Votes(); len(sent) != 1 || sent[0].UserID != "auth0|viewer" || sent[0].ElectionID != election {
		t.Fatalf("queued %+v", sent)
	}
	// The address Envoy appended, not one the client claimed.
	if len(g.Reserves) != 1 || g.Reserves[0].ClientIP != "203.0.113.7" {
		t.Errorf("reservations %+v, want one from 203.0.113.7", g.Reserves)
	}
	if resp := post(t, srv.URL, "good", vote); resp.StatusCode != http.StatusConflict {
		t.Errorf("second vote: %d, want 409", resp.StatusCode)
	}
}

func TestRejections(t *testing.T) {
	srv, q, _ := newServer(t)
	if resp := post(t, srv.URL, "bad", vote); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bad token: %d, want 401", resp.StatusCode)
	}
	if resp := post(t, srv.URL, "good", strings.Repeat(" ", 600)+vote); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("large body: %d, want 413", resp.StatusCode)
	}
	resp, err := http.Get(srv.URL + contract.PathVotes)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", resp.StatusCode)
	}
	if sent := q.Votes(); len(sent) != 0 {
		t.Errorf("rejected votes queued: %+v", sent)
	}
}
