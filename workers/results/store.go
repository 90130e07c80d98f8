package results

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotFound means the election does not exist.
var ErrNotFound = errors.New("election not found")

// Store is where the handlers read counts from: the Hub (in memory, refreshed on the
// processor's NOTIFY) in production, PGStore directly where freshness without a hub matters
// more than speed (tests of the SQL).
type Store interface {
	ElectionCounts(ctx context.Context, electionID string) (ElectionCounts, error)
	LiveTotal(ctx context.Context, electionID string) (LiveTotal, error)
	Ping(ctx context.Context) error
}

// ElectionCounts is an election with every candidate and its maintained count.
type ElectionCounts struct {
	ElectionID string
	Title      string
	Status     string    // as stored: DRAFT, SCHEDULED, ACTIVE, CLOSED, CANCELLED
	UpdatedAt  time.Time // elections.updated_at
	Candidates []CandidateCount
}

// CandidateCount is one candidate's row; UpdatedAt is zero when it has no vote_counts row yet.
type CandidateCount struct {
	ID        string
	Name      string
	Party     string
	Votes     int64
	UpdatedAt time.Time
}

// LiveTotal is the sum of an election's counts.
type LiveTotal struct {
	ElectionID        string
	Status            string
	Votes             int64
	CountsUpdatedAt   time.Time // max(vote_counts.updated_at); zero without counts
	ElectionUpdatedAt time.Time
}

// PGStore reads vote_counts, the table the processor maintains in the insert transaction; it
// never scans votes (COUNT(*) over a million rows takes ~200 ms, too slow per request).
type PGStore struct {
	Pool *pgxpool.Pool
}

const electionCountsSQL = `
SELECT e.id::text, e.title, e.status, e.updated_at, c.id::text, c.name, c.party, COALESCE(vc.votes, 0), vc.updated_at
FROM elections e
LEFT JOIN candidates c ON c.election_id = e.id
LEFT JOIN vote_counts vc ON vc.election_id = c.election_id AND vc.candidate_id = c.id
WHERE e.id = ANY($1::uuid[])`

// ElectionCounts implements Store.
func (s PGStore) ElectionCounts(ctx context.Context, electionID string) (ElectionCounts, error) {
	m, err := s.ElectionsCounts(ctx, []string{electionID})
	if err != nil {
		return ElectionCounts{}, err
	}
	ec, ok := m[electionID]
	if !ok {
		return ElectionCounts{}, ErrNotFound
	}
	return ec, nil
}

// ElectionsCounts reads several elections in one round trip: the hub refreshes every tracked
// election with it once per poll, and all elections named by a burst of notifications at once.
// Elections that do not exist are absent from the map.
func (s PGStore) ElectionsCounts(ctx context.Context, electionIDs []string) (map[string]ElectionCounts, error) {
	return electionsCounts(ctx, s.Pool, electionIDs)
}

// querier is what pgxpool.Pool and pgx.Tx share, so statistics can read counts inside its
// transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func electionsCounts(ctx context.Context, q querier, electionIDs []string) (map[string]ElectionCounts, error) {
	rows, err := q.Query(ctx, electionCountsSQL, electionIDs)
	if err != nil {
		return nil, fmt.Errorf("query results: %w", err)
	}
	defer rows.Close()
	out := make(map[string]ElectionCounts, len(electionIDs))
	for rows.Next() {
		var (
			ec                  ElectionCounts
			candID, name, party *string
			votes               int64
			countAt             *time.Time
		)
		if err := rows.Scan(&ec.ElectionID, &ec.Title, &ec.Status, &ec.UpdatedAt, &candID, &name, &party, &votes, &countAt); err != nil {
			return nil, fmt.Errorf("scan results: %w", err)
		}
		if prev, ok := out[ec.ElectionID]; ok {
			ec = prev
		}
		ec.UpdatedAt = ec.UpdatedAt.UTC()
		if candID != nil { // election without candidates: the LEFT JOIN yields one empty row
			c := CandidateCount{ID: *candID, Name: *name, Party: *party, Votes: votes}
			if countAt != nil {
				c.UpdatedAt = countAt.UTC()
			}
			ec.Candidates = append(ec.Candidates, c)
		}
		out[ec.ElectionID] = ec
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query results: %w", err)
	}
	// A stable candidate order makes snapshots comparable and stream messages deterministic.
	for id, ec := range out {
		slices.SortFunc(ec.Candidates, func(a, b CandidateCount) int { return strings.Compare(a.ID, b.ID) })
		out[id] = ec
	}
	return out, nil
}

const liveTotalSQL = `
SELECT e.status, e.updated_at, COALESCE(sum(vc.votes), 0)::bigint, max(vc.updated_at)
FROM elections e
LEFT JOIN vote_counts vc ON vc.election_id = e.id
WHERE e.id = $1
GROUP BY e.id`

// LiveTotal implements Store.
func (s PGStore) LiveTotal(ctx context.Context, electionID string) (LiveTotal, error) {
	lt := LiveTotal{ElectionID: electionID}
	var countsAt *time.Time
	err := s.Pool.QueryRow(ctx, liveTotalSQL, electionID).Scan(&lt.Status, &lt.ElectionUpdatedAt, &lt.Votes, &countsAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return LiveTotal{}, ErrNotFound
	}
	if err != nil {
		return LiveTotal{}, fmt.Errorf("query live total: %w", err)
	}
	lt.ElectionUpdatedAt = lt.ElectionUpdatedAt.UTC()
	if countsAt != nil {
		lt.CountsUpdatedAt = countsAt.UTC()
	}
	return lt, nil
}

// Ping implements Store.
func (s PGStore) Ping(ctx context.Context) error { return s.Pool.Ping(ctx) }
