package results

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/contract"
)

// routeVoteStatus answers the edge filter's status fallback (a viewer's vote is in
// PostgreSQL but its Redis dedup key is gone, e.g. after a Redis failover). It is internal:
// Envoy routes only /api/v1/results/ publicly; the filter reaches this path through the
// "vote_status" cluster with Envoy's own HTTP client, after it has checked the caller's token.
const routeVoteStatus = "GET /internal/v1/vote-status/{electionId}/{userId}"

// VoteStatusStore finds a viewer's persisted vote.
type VoteStatusStore interface {
	VoteOf(ctx context.Context, electionID, userID string) (voteID string, acceptedAt time.Time, found bool, err error)
}

// WithVoteStatus serves the internal vote-status endpoint from vs.
func WithVoteStatus(vs VoteStatusStore) Option { return func(s *Server) { s.voteStatus = vs } }

// VoteOf implements VoteStatusStore through the UNIQUE (election_id, user_id) index.
func (s PGStore) VoteOf(ctx context.Context, electionID, userID string) (string, time.Time, bool, error) {
	var id string
	var at time.Time
	err := s.Pool.QueryRow(ctx, `SELECT id::text, accepted_at FROM votes WHERE election_id = $1 AND user_id = $2`,
		electionID, userID).Scan(&id, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", time.Time{}, false, nil
	}
	return id, at, err == nil, err
}

// voteStatus is the contract's VoteStatus.
type voteStatus struct {
	ElectionID string     `json:"electionId"`
	UserID     string     `json:"userId"`
	HasVoted   bool       `json:"hasVoted"`
	VoteID     string     `json:"voteId,omitempty"`
	Timestamp  *time.Time `json:"timestamp,omitempty"`
}

func (s *Server) handleVoteStatus(w http.ResponseWriter, r *http.Request) {
	electionID, ok := contract.CanonicalUUID(r.PathValue("electionId"))
	userID := r.PathValue("userId")
	if !ok {
		s.writeError(w, r, contract.CodeInvalidElectionID, "electionId must be a uuid")
		return
	}
	if s.voteStatus == nil {
		s.writeError(w, r, contract.CodeUnavailable, "vote status not served here")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.dbTimeout)
	defer cancel()
	voteID, at, found, err := s.voteStatus.VoteOf(ctx, electionID, userID)
	if err != nil {
		s.log.Error("vote status lookup failed", "requestId", r.Header.Get("X-Request-Id"), "err", err)
		s.writeError(w, r, contract.CodeUnavailable, "vote status unavailable")
		return
	}
	st := voteStatus{ElectionID: electionID, UserID: userID, HasVoted: found}
	if found {
		at = at.UTC()
		st.VoteID, st.Timestamp = voteID, &at
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(st)
}
