package votefilter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/dedup"
)

// VoteStatus is the contract's answer of the status endpoint.
type VoteStatus struct {
	ElectionID string     `json:"electionId"`
	UserID     string     `json:"userId"`
	HasVoted   bool       `json:"hasVoted"`
	VoteID     string     `json:"voteId,omitempty"`
	Timestamp  *time.Time `json:"timestamp,omitempty"`
}

// StatusQuery is one status request, copied out of Envoy.
type StatusQuery struct {
	Authorization string
	RequestID     string
	Path          string
}

// StatusLookup is a checked status query: who asks about whom.
type StatusLookup struct {
	ElectionID, UserID string
	// claimed is the home region the viewer's own token claims, when they ask about themself;
	// everywhere is set when an admin asks about a viewer whose claim the edge cannot know
	// (the fleet takes homes from a claim): every region's store is read.
	claimed    string
	everywhere bool
}

// CheckStatus authenticates the caller and checks the path: a viewer may ask only about
// themself, an admin about anyone.
func (a *Admitter) CheckStatus(ctx context.Context, q StatusQuery) (*StatusLookup, *Rejection) {
	rest := strings.TrimPrefix(q.Path, contract.PathVoteStatus)
	electionID, rawUser, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(rawUser, "/") {
		return nil, reject(contract.CodeNotFound, "use /api/v1/votes/status/{electionId}/{userId}")
	}
	if !contract.IsUUID(electionID) {
		return nil, reject(contract.CodeInvalidElectionID, "electionId must be a uuid")
	}
	// Viewer ids are token subjects; Auth0's look like "auth0|64f…" and arrive escaped.
	userID, err := url.PathUnescape(rawUser)
	if err != nil || userID == "" || len(userID) > 255 {
		return nil, reject(contract.CodeInvalidUserID, "userId must be a viewer id")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(a.cfg.EnqueueTimeoutMs)*time.Millisecond)
	defer cancel()
	id, rej := a.authenticate(ctx, q.Authorization)
	if rej != nil {
		return nil, rej
	}
	if id.Subject != userID && !id.Has(a.cfg.JWT.AdminPermission) {
		return nil, &Rejection{Code: contract.CodeForbidden, Message: "viewers may only ask about their own vote",
			Outcome: OutcomeForbidden}
	}
	l := &StatusLookup{ElectionID: strings.ToLower(electionID), UserID: userID}
	if id.Subject == userID {
		l.claimed = id.HomeRegion
	} else {
		l.everywhere = a.cfg.JWT.HomeRegionClaim != ""
	}
	return l, nil
}

// Status answers from the edge's dedup store. fallback is true when the store has no key or
// could not be read, and StatusCluster is set: the adapter then asks the status service,
// which reads PostgreSQL (a key can be missing after a Redis failover; the row cannot).
func (a *Admitter) Status(ctx context.Context, l *StatusLookup, requestID string) (resp Response, fallback bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(a.cfg.EnqueueTimeoutMs)*time.Millisecond)
	defer cancel()
	entry, err := a.lookup(ctx, l)
	if err != nil && a.cfg.StatusCluster == "" {
		a.Log.Error("status lookup failed", "requestId", requestID, "err", err)
		return ErrorReply(&Rejection{Code: contract.CodeUnavailable, Message: "vote store unavailable, try again",
			RetryAfter: time.Second, Outcome: OutcomeStoreFailed}, requestID), false
	}
	// Only a final entry is a vote; a pending one may still fail, so PostgreSQL decides.
	if entry.State != dedup.Final && a.cfg.StatusCluster != "" {
		return Response{}, true
	}
	st := VoteStatus{ElectionID: l.ElectionID, UserID: l.UserID}
	if entry.State == dedup.Final {
		at := entry.AcceptedAt
		st.HasVoted, st.VoteID, st.Timestamp = true, entry.VoteID, &at
	}
	return StatusReply(st), false
}

// lookup reads the viewer's entry in the store that decided on their vote: their home
// region's, whichever edge asks, or every region's for an admin who cannot know the home.
func (a *Admitter) lookup(ctx context.Context, l *StatusLookup) (dedup.Entry, error) {
	if !l.everywhere || a.stores == nil {
		_, store := a.home(l.UserID, l.claimed)
		return store.Gate.Lookup(ctx, l.ElectionID, l.UserID)
	}
	var found dedup.Entry
	var errs []error
	for _, r := range a.regions {
		e, err := a.stores[r].Gate.Lookup(ctx, l.ElectionID, l.UserID)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", r, err))
		case e.State == dedup.Final:
			return e, nil
		case e.State != dedup.None:
			found = e
		}
	}
	return found, errors.Join(errs...)
}

// StatusReply renders a VoteStatus.
func StatusReply(st VoteStatus) Response {
	body, _ := json.Marshal(st)
	return Response{Status: http.StatusOK, Headers: jsonHeaders(), Body: body, Outcome: OutcomeAnswered}
}

// StatusFromService turns the status service's answer into the reply; anything but a 200
// with a VoteStatus for the same viewer is a 503.
func StatusFromService(l *StatusLookup, status int, body []byte, requestID string) Response {
	var st VoteStatus
	if status == http.StatusOK && json.Unmarshal(body, &st) == nil && st.UserID == l.UserID &&
		strings.EqualFold(st.ElectionID, l.ElectionID) {
		return StatusReply(st)
	}
	return ErrorReply(&Rejection{Code: contract.CodeUnavailable, Message: "vote status unavailable, try again",
		RetryAfter: time.Second, Outcome: OutcomeStoreFailed}, requestID)
}

// StatusServicePath is the status service's path for a lookup.
func StatusServicePath(l *StatusLookup) string {
	return contract.PathInternalStatus + l.ElectionID + "/" + url.PathEscape(l.UserID)
}
