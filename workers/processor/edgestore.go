package processor

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/tvvote/voting/filters/votefilter/dedup"
)

// EdgeStore is the edge's admission store, where every stored vote is made final. That
// settles the viewers whose edge died after SQS acknowledged their vote but before it could
// confirm it: without it their pending reservation would expire and let them vote again.
type EdgeStore interface {
	Record(ctx context.Context, votes []dedup.Stored) ([]dedup.Recorded, error)
}

// NewEdgeStore writes final keys that live for ttl (the edge's dedup TTL).
func NewEdgeStore(c rueidis.Client, ttl time.Duration) EdgeStore { return edgeStore{c: c, ttl: ttl} }

type edgeStore struct {
	c   rueidis.Client
	ttl time.Duration
}

func (s edgeStore) Record(ctx context.Context, votes []dedup.Stored) ([]dedup.Recorded, error) {
	return dedup.Record(ctx, s.c, s.ttl, votes)
}

// WithEdgeStore makes the processor record every vote it stores in the edge store.
func (p *Processor) WithEdgeStore(s EdgeStore) *Processor {
	p.edge = s
	return p
}

// recordTimeout bounds the edge-store step of a batch: it must not hold up deletes for long.
const recordTimeout = 2 * time.Second

// recordInEdge makes the inserted votes final in the edge store. Best effort: the store being
// away costs the protection for the few votes whose edge also died, not the batch.
func (p *Processor) recordInEdge(ctx context.Context, votes []vote, inserted map[string]bool) {
	if p.edge == nil || len(inserted) == 0 {
		return
	}
	stored := make([]dedup.Stored, 0, len(inserted))
	for _, v := range votes {
		if inserted[v.ID] {
			stored = append(stored, dedup.Stored{ElectionID: v.ElectionID, ViewerID: v.UserID, VoteID: v.ID, AcceptedAt: v.AcceptedAt})
		}
	}
	ctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	res, err := p.edge.Record(ctx, stored)
	counts := map[string]int{}
	for i, r := range res {
		switch r {
		case dedup.RecordedNow:
			counts[recordNow]++
		case dedup.RecordedAlready:
			counts[recordAlready]++
		case dedup.RecordedOther:
			counts[recordOther]++
			p.log.Error("stored vote, but the edge store names another vote of this viewer as final",
				"voteId", stored[i].VoteID, "electionId", stored[i].ElectionID, "viewerId", stored[i].ViewerID)
		case dedup.RecordFailed:
			counts[recordError]++
		}
	}
	if err != nil {
		p.log.Warn("stored votes not recorded in the edge store", "votes", len(stored), "failed", counts[recordError], "err", err)
	}
	for k, n := range counts {
		p.metrics.EdgeRecords.WithLabelValues(k).Add(float64(n))
	}
}

// conflictsSQL finds, among votes that were not inserted, those whose viewer holds a row under
// another vote id. It runs after the commit: any row that made the insert skip a vote was
// committed by then (the insert waits for a concurrent one), so a redelivered vote (same id)
// is never mistaken for a second one.
const conflictsSQL = `
SELECT d.id::text, v.id::text
FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS d(id, election_id, user_id)
JOIN votes v ON v.election_id = d.election_id AND v.user_id = d.user_id
WHERE v.id <> d.id`

// findConflicts returns, for each skipped vote that lost to another vote of its viewer, the
// stored vote's id.
func findConflicts(ctx context.Context, db Querier, skipped []vote) (map[string]string, error) {
	if len(skipped) == 0 {
		return nil, nil
	}
	ids := make([]string, len(skipped))
	elections := make([]string, len(skipped))
	users := make([]string, len(skipped))
	for i, v := range skipped {
		ids[i], elections[i], users[i] = v.ID, v.ElectionID, v.UserID
	}
	rows, err := db.Query(ctx, conflictsSQL, ids, elections, users)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var dropped, stored string
	_, err = pgx.ForEachRow(rows, []any{&dropped, &stored}, func() error {
		out[dropped] = stored
		return nil
	})
	return out, err
}

// duplicatesSQL counts second votes in vote_stats.duplicates, by the region that served them
// and the home region that admitted them: the per-region figure of viewers admitted twice.
const duplicatesSQL = `
INSERT INTO vote_stats (election_id, hour, region, home_region, candidate_id, duplicates)
SELECT election_id, date_trunc('hour', accepted_at, 'UTC'), region, home_region, candidate_id, count(*)
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[])
    AS d(election_id, candidate_id, region, home_region, accepted_at)
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (election_id, hour, region, home_region, candidate_id) DO UPDATE
    SET duplicates = vote_stats.duplicates + EXCLUDED.duplicates`

// recordDuplicates adds the skipped votes that lost to another vote of their viewer to
// vote_stats. It runs after the batch committed, so a message redelivered after this and before
// its deletion is counted again: the figure is at least the second votes, never fewer.
func recordDuplicates(ctx context.Context, db Querier, skipped []vote, conflicts map[string]string) error {
	if len(conflicts) == 0 {
		return nil
	}
	var es, cs, regions, homes []string
	var at []time.Time
	for _, v := range skipped {
		if _, ok := conflicts[v.ID]; ok {
			es, cs = append(es, v.ElectionID), append(cs, v.CandidateID)
			regions, homes, at = append(regions, v.Region), append(homes, v.home()), append(at, v.AcceptedAt)
		}
	}
	rows, err := db.Query(ctx, duplicatesSQL, es, cs, regions, homes, at)
	if err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}
