package votefilter

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/dedup"
)

func tokenFor(sub string, perms ...string) auth.Principal {
	return auth.Principal{Subject: sub, Permissions: perms}
}

const statusVoteID = "01890a5d-ac96-774b-bcce-b302099a8057"

var statusVotedAt = time.Date(2026, 1, 15, 20, 30, 0, 250000000, time.UTC)

func statusPath(election, user string) string {
	return contract.PathVoteStatus + election + "/" + url.PathEscape(user)
}

func statusQuery(tok, path string) StatusQuery {
	return StatusQuery{Authorization: "Bearer " + tok, RequestID: testRequestID, Path: path}
}

// A viewer asks about themself: the answer comes from the dedup key's value.
func TestStatusOwnVoteFromRedis(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	r.gate.SetFinal(testElection, viewerSub, statusVoteID, statusVotedAt)

	// The election id may come in upper case; the store is keyed by the lower-case one.
	l, rej := r.adm.CheckStatus(context.Background(), statusQuery(goodToken, statusPath(strings.ToUpper(testElection), viewerSub)))
	if rej != nil {
		t.Fatalf("CheckStatus: %v", rej)
	}
	if *l != (StatusLookup{ElectionID: testElection, UserID: viewerSub}) {
		t.Errorf("lookup = %+v", l)
	}
	resp, fallback := r.adm.Status(context.Background(), l, testRequestID)
	if fallback {
		t.Fatal("fallback requested although Redis holds the key")
	}
	want := `{"electionId":"` + testElection + `","userId":"auth0|viewer-1","hasVoted":true,"voteId":"` + statusVoteID +
		`","timestamp":"2026-01-15T20:30:00.25Z"}`
	if resp.Status != http.StatusOK || string(resp.Body) != want {
		t.Errorf("status reply %d %s\nwant %s", resp.Status, resp.Body, want)
	}
	if resp.Outcome != OutcomeAnswered {
		t.Errorf("outcome = %q, want answered", resp.Outcome)
	}
	if ct, _ := header(resp, "content-type"); ct != "application/json" {
		t.Errorf("content-type = %q", ct)
	}
	if len(r.gate.Lookups) != 1 || r.gate.Lookups[0] != testElection+"|"+viewerSub {
		t.Errorf("lookups = %v", r.gate.Lookups)
	}
}

func TestStatusNotVoted(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	l, rej := r.adm.CheckStatus(context.Background(), statusQuery(goodToken, statusPath(testElection, viewerSub)))
	if rej != nil {
		t.Fatal(rej)
	}
	resp, fallback := r.adm.Status(context.Background(), l, testRequestID)
	want := `{"electionId":"` + testElection + `","userId":"auth0|viewer-1","hasVoted":false}`
	if fallback || resp.Status != http.StatusOK || string(resp.Body) != want {
		t.Errorf("not voted: fallback %v, %d %s; want %s", fallback, resp.Status, resp.Body, want)
	}
}

// With a status cluster, a missing key or a failed read asks the status service; without
// one, a missing key is "not voted" and a failed read is a 503.
func TestStatusFallback(t *testing.T) {
	l := &StatusLookup{ElectionID: testElection, UserID: viewerSub}
	withCluster := testConfig()
	withCluster.StatusCluster = "status_service"

	r := newRig(t, withCluster, duringVote)
	if resp, fallback := r.adm.Status(context.Background(), l, testRequestID); !fallback || resp.Status != 0 {
		t.Errorf("missing key with a cluster: fallback %v, reply %d; want fallback and no reply", fallback, resp.Status)
	}
	r.gate.LookupErr = errors.New("redis: i/o timeout")
	if _, fallback := r.adm.Status(context.Background(), l, testRequestID); !fallback {
		t.Error("failed read with a cluster: no fallback")
	}
	r.gate.LookupErr = nil
	r.gate.SetFinal(testElection, viewerSub, statusVoteID, statusVotedAt)
	if resp, fallback := r.adm.Status(context.Background(), l, testRequestID); fallback || !strings.Contains(string(resp.Body), statusVoteID) {
		t.Errorf("key present with a cluster: fallback %v, %s; want Redis's answer", fallback, resp.Body)
	}

	r = newRig(t, testConfig(), duringVote)
	r.gate.LookupErr = errors.New("redis: i/o timeout")
	resp, fallback := r.adm.Status(context.Background(), l, testRequestID)
	if fallback || resp.Status != http.StatusServiceUnavailable {
		t.Fatalf("failed read without a cluster: fallback %v, %d %s; want 503", fallback, resp.Status, resp.Body)
	}
	if ra, _ := header(resp, "retry-after"); ra != "1" || decodeError(t, resp).Code != contract.CodeUnavailable ||
		resp.Outcome != OutcomeStoreFailed {
		t.Errorf("503: retry-after %q, outcome %q, body %s", ra, resp.Outcome, resp.Body)
	}
}

// A pending reservation is not a vote yet: without a status service the answer is "not
// voted", with one PostgreSQL decides.
func TestStatusPendingIsNotAVote(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	r.gate.SetPending(testElection, viewerSub, dedup.Attempt{VoteID: statusVoteID, AcceptedAt: statusVotedAt,
		CandidateID: testCandidate, Owner: "o", Budget: time.Second})
	l := &StatusLookup{ElectionID: testElection, UserID: viewerSub}
	resp, fallback := r.adm.Status(context.Background(), l, testRequestID)
	want := `{"electionId":"` + testElection + `","userId":"auth0|viewer-1","hasVoted":false}`
	if fallback || string(resp.Body) != want {
		t.Errorf("pending, no status service: fallback %v, body %s; want %s", fallback, resp.Body, want)
	}
	cfg := testConfig()
	cfg.StatusCluster = "vote_status"
	r = newRig(t, cfg, duringVote)
	r.gate.SetPending(testElection, viewerSub, dedup.Attempt{VoteID: statusVoteID, AcceptedAt: statusVotedAt,
		CandidateID: testCandidate, Owner: "o", Budget: time.Second})
	if _, fallback := r.adm.Status(context.Background(), l, testRequestID); !fallback {
		t.Error("pending with a status service: want the fallback to PostgreSQL")
	}
}

func TestCheckStatusRejects(t *testing.T) {
	long := strings.Repeat("u", 256)
	tests := []struct {
		name, tok, path string
		status          int
		code            string
		verified        bool
		outcome         string
	}{
		{"other viewer", goodToken, statusPath(testElection, otherSub), 403, contract.CodeForbidden, true, OutcomeForbidden},
		{"no token", "", statusPath(testElection, viewerSub), 401, contract.CodeUnauthorized, false, OutcomeJWTRejected},
		{"bad token", "nope", statusPath(testElection, viewerSub), 401, contract.CodeUnauthorized, true, OutcomeJWTRejected},
		{"election not a uuid", goodToken, statusPath("election-1", viewerSub), 400, contract.CodeInvalidElectionID, false, OutcomeInvalid},
		{"empty user", goodToken, contract.PathVoteStatus + testElection + "/", 400, contract.CodeInvalidUserID, false, OutcomeInvalid},
		{"bad escape", goodToken, contract.PathVoteStatus + testElection + "/%zz", 400, contract.CodeInvalidUserID, false, OutcomeInvalid},
		{"user too long", goodToken, statusPath(testElection, long), 400, contract.CodeInvalidUserID, false, OutcomeInvalid},
		{"no user segment", goodToken, contract.PathVoteStatus + testElection, 404, contract.CodeNotFound, false, OutcomeInvalid},
		{"extra segment", goodToken, statusPath(testElection, viewerSub) + "/x", 404, contract.CodeNotFound, false, OutcomeInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, testConfig(), duringVote)
			q := statusQuery(tc.tok, tc.path)
			if tc.tok == "" {
				q.Authorization = ""
			}
			l, rej := r.adm.CheckStatus(context.Background(), q)
			if l != nil || rej == nil {
				t.Fatalf("CheckStatus = %+v, %v; want a rejection", l, rej)
			}
			resp := ErrorReply(rej, testRequestID)
			if resp.Status != tc.status || rej.Code != tc.code {
				t.Errorf("rejection %s → %d, want %s → %d", rej.Code, resp.Status, tc.code, tc.status)
			}
			if resp.Outcome != tc.outcome {
				t.Errorf("outcome = %q, want %q", resp.Outcome, tc.outcome)
			}
			if got := len(r.ver.calls) > 0; got != tc.verified {
				t.Errorf("verifier called = %v, want %v", got, tc.verified)
			}
			if len(r.gate.Lookups) != 0 {
				t.Errorf("a refused status query read the store: %v", r.gate.Lookups)
			}
		})
	}
}

// An admin may ask about any viewer, including one whose id holds characters that need
// escaping in a path.
func TestCheckStatusAdmin(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	for _, user := range []string{otherSub, "google-oauth2|1234/5", viewerSub} {
		l, rej := r.adm.CheckStatus(context.Background(), statusQuery(adminToken, statusPath(testElection, user)))
		if rej != nil || l.UserID != user || l.ElectionID != testElection {
			t.Errorf("admin asking about %q: %+v, %v", user, l, rej)
		}
	}
	// The admin permission is the configured one.
	cfg := testConfig()
	cfg.JWT.AdminPermission = "elections:write"
	r = newRig(t, cfg, duringVote)
	if _, rej := r.adm.CheckStatus(context.Background(), statusQuery(adminToken, statusPath(testElection, otherSub))); rej == nil ||
		rej.Code != contract.CodeForbidden {
		t.Errorf("token without the configured permission: %v, want FORBIDDEN", rej)
	}
}

func TestStatusFromService(t *testing.T) {
	l := &StatusLookup{ElectionID: testElection, UserID: viewerSub}
	good := `{"electionId":"` + testElection + `","userId":"auth0|viewer-1","hasVoted":true,"voteId":"` + statusVoteID +
		`","timestamp":"2026-01-15T20:30:00.25Z"}`
	resp := StatusFromService(l, 200, []byte(good), testRequestID)
	if resp.Status != http.StatusOK || string(resp.Body) != good || resp.Outcome != OutcomeAnswered {
		t.Errorf("matching 200: %d %s (%s)", resp.Status, resp.Body, resp.Outcome)
	}
	upper := strings.Replace(good, testElection, strings.ToUpper(testElection), 1)
	if resp := StatusFromService(l, 200, []byte(upper), testRequestID); resp.Status != http.StatusOK {
		t.Errorf("upper-case election id from the service: %d, want 200", resp.Status)
	}
	bad := map[string]struct {
		status int
		body   string
	}{
		"other viewer":   {200, strings.Replace(good, "viewer-1", "viewer-2", 1)},
		"other election": {200, strings.Replace(good, testElection, closedElection, 1)},
		"server error":   {500, good},
		"not found":      {404, good},
		"no answer":      {0, ""},
		"garbage":        {200, "<html>"},
		"null":           {200, "null"},
		"empty":          {200, ""},
	}
	for name, tc := range bad {
		resp := StatusFromService(l, tc.status, []byte(tc.body), testRequestID)
		if resp.Status != http.StatusServiceUnavailable || resp.Outcome != OutcomeStoreFailed {
			t.Errorf("%s: %d %s (%s), want 503 store_failed", name, resp.Status, resp.Body, resp.Outcome)
			continue
		}
		if ra, _ := header(resp, "retry-after"); ra != "1" {
			t.Errorf("%s: retry-after %q", name, ra)
		}
		if er := decodeError(t, resp); er.Code != contract.CodeUnavailable || er.TraceID != testRequestID {
			t.Errorf("%s: error %+v", name, er)
		}
	}
	if p := StatusServicePath(l); p != "/internal/v1/vote-status/"+testElection+"/auth0%7Cviewer-1" {
		t.Errorf("StatusServicePath = %q", p)
	}
}

func TestAuthorizeAdmin(t *testing.T) {
	r := newRig(t, testConfig(), duringVote)
	if deny := r.adm.AuthorizeAdmin(context.Background(), "Bearer "+adminToken, testRequestID); deny != nil {
		t.Errorf("admin refused: %d %s", deny.Status, deny.Body)
	}
	tests := []struct {
		name, auth string
		status     int
		code       string
		outcome    string
		challenge  bool
	}{
		{"no token", "", 401, contract.CodeUnauthorized, OutcomeJWTRejected, true},
		{"bad token", "Bearer nope", 401, contract.CodeUnauthorized, OutcomeJWTRejected, true},
		{"expired token", "Bearer " + expiredToken, 401, contract.CodeUnauthorized, OutcomeJWTRejected, true},
		{"viewer token", "Bearer " + goodToken, 403, contract.CodeForbidden, OutcomeForbidden, false},
	}
	for _, tc := range tests {
		deny := r.adm.AuthorizeAdmin(context.Background(), tc.auth, testRequestID)
		if deny == nil {
			t.Errorf("%s: let through", tc.name)
			continue
		}
		if deny.Status != tc.status || decodeError(t, *deny).Code != tc.code || deny.Outcome != tc.outcome {
			t.Errorf("%s: %d %s (%s), want %d %s (%s)", tc.name, deny.Status, deny.Body, deny.Outcome, tc.status, tc.code, tc.outcome)
		}
		if _, ok := header(*deny, "www-authenticate"); ok != tc.challenge {
			t.Errorf("%s: www-authenticate present = %v, want %v", tc.name, ok, tc.challenge)
		}
	}
	cfg := testConfig()
	cfg.JWT.AdminPermission = "elections:write"
	r = newRig(t, cfg, duringVote)
	r.ver.ids["writer"] = tokenFor("auth0|writer", "elections:write")
	if deny := r.adm.AuthorizeAdmin(context.Background(), "Bearer "+adminToken, testRequestID); deny == nil || deny.Status != 403 {
		t.Error("a token without the configured admin permission was let through")
	}
	if deny := r.adm.AuthorizeAdmin(context.Background(), "Bearer writer", testRequestID); deny != nil {
		t.Errorf("a token with the configured permission was refused: %s", deny.Body)
	}
}
