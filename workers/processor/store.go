package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
)

// NotifyChannel is the PostgreSQL LISTEN/NOTIFY channel on which the processor announces which
// elections' vote_counts changed; the results worker listens to it to refresh without polling.
const NotifyChannel = "vote_counts"

// CountsChanged is the JSON payload sent on NotifyChannel.
type CountsChanged struct {
	ElectionIDs []string `json:"electionIds"`
}

type pair struct{ electionID, candidateID string }

// knownPairsSQL finds which (election, candidate) pairs of a batch exist, so votes for unknown
// candidates are set aside instead of failing the foreign key and aborting the whole batch.
const knownPairsSQL = `
SELECT DISTINCT c.election_id::text, c.id::text
FROM unnest($1::uuid[], $2::uuid[]) AS p(election_id, candidate_id)
JOIN candidates c ON c.election_id = p.election_id AND c.id = p.candidate_id`

// insertVotesSQL inserts a batch and adds exactly the rows it inserted to vote_counts, in one
// statement so the counts cannot diverge from the votes table.
//
//   - NOT EXISTS on the primary key: a redelivered message is a duplicate anyway, and a vote id
//     reused for another user must not abort the batch with a primary-key violation.
//   - ORDER BY in both inserts: concurrent receivers then take row and index locks in the same
//     order, which rules out deadlocks between them.
//   - The vote_counts CTE runs although the outer query does not read it (PostgreSQL executes
//     every data-modifying CTE exactly once).
const insertVotesSQL = `
WITH input AS (
    SELECT *
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
        AS t(id, election_id, candidate_id, user_id, region, request_id, accepted_at)
), inserted AS (
    INSERT INTO votes (id, election_id, candidate_id, user_id, region, request_id, accepted_at)
    SELECT i.id, i.election_id, i.candidate_id, i.user_id, i.region, i.request_id, i.accepted_at
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM votes v WHERE v.id = i.id)
    ORDER BY i.election_id, i.user_id
    ON CONFLICT (election_id, user_id) DO NOTHING
    RETURNING id, election_id, candidate_id
), counted AS (
    INSERT INTO vote_counts (election_id, candidate_id, votes)
    SELECT election_id, candidate_id, count(*)
    FROM inserted
    GROUP BY election_id, candidate_id
    ORDER BY election_id, candidate_id
    ON CONFLICT (election_id, candidate_id) DO UPDATE
        SET votes = vote_counts.votes + EXCLUDED.votes, updated_at = now()
)
SELECT id::text, election_id::text FROM inserted`

// txResult is what one batch transaction did.
type txResult struct {
	unknown   map[pair]bool   // pairs not in candidates: those votes were not inserted
	inserted  map[string]bool // vote ids actually inserted
	elections []string        // elections whose counts changed, sorted
}

// persist runs one transaction: look up candidates, insert the valid votes, bump the counts,
// notify listeners. Nothing is visible (not even the notification) until it commits.
func persist(ctx context.Context, db beginner, votes []vote) (txResult, error) {
	res := txResult{unknown: map[pair]bool{}, inserted: map[string]bool{}}
	tx, err := db.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	elecs := make([]string, len(votes))
	cands := make([]string, len(votes))
	for i, v := range votes {
		elecs[i], cands[i] = v.ElectionID, v.CandidateID
	}
	rows, err := tx.Query(ctx, knownPairsSQL, elecs, cands)
	if err != nil {
		return res, fmt.Errorf("look up candidates: %w", err)
	}
	known := map[pair]bool{}
	for rows.Next() {
		var p pair
		if err := rows.Scan(&p.electionID, &p.candidateID); err != nil {
			rows.Close()
			return res, fmt.Errorf("scan candidate: %w", err)
		}
		known[p] = true
	}
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("look up candidates: %w", err)
	}

	var (
		ids, es, cs, users, regions, reqIDs []string
		accepted                            []time.Time
	)
	for _, v := range votes {
		p := pair{v.ElectionID, v.CandidateID}
		if !known[p] {
			res.unknown[p] = true
			continue
		}
		ids = append(ids, v.ID)
		es = append(es, v.ElectionID)
		cs = append(cs, v.CandidateID)
		users = append(users, v.UserID)
		regions = append(regions, v.Region)
		reqIDs = append(reqIDs, v.RequestID)
		accepted = append(accepted, v.AcceptedAt)
	}

	if len(ids) > 0 {
		rows, err = tx.Query(ctx, insertVotesSQL, ids, es, cs, users, regions, reqIDs, accepted)
		if err != nil {
			return res, fmt.Errorf("insert votes: %w", err)
		}
		touched := map[string]bool{}
		for rows.Next() {
			var id, election string
			if err := rows.Scan(&id, &election); err != nil {
				rows.Close()
				return res, fmt.Errorf("scan inserted vote: %w", err)
			}
			res.inserted[id] = true
			touched[election] = true
		}
		if err := rows.Err(); err != nil {
			return res, fmt.Errorf("insert votes: %w", err)
		}
		for e := range touched {
			res.elections = append(res.elections, e)
		}
		sort.Strings(res.elections)
	}

	if len(res.elections) > 0 {
		// NOTIFY inside the transaction is delivered only on commit, so listeners never see a
		// count that is later rolled back. Ten messages per batch keep it far below the 8000-byte
		// payload limit.
		payload, err := json.Marshal(CountsChanged{ElectionIDs: res.elections})
		if err != nil {
			return res, err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, string(payload)); err != nil {
			return res, fmt.Errorf("notify: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	return res, nil
}

// beginner is the part of *pgxpool.Pool the processor uses.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}
