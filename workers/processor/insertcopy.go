package processor

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The COPY insert path, kept so the benchmark can measure it against insertUnnest
// (BENCHMARKS.md, "Processor"): the same statement, with the batch streamed into a temporary
// table first, two more round trips (CREATE TEMP TABLE IF NOT EXISTS, COPY) that a
// transaction-pooling PgBouncer would not survive. Nothing in the processor selects it, so the
// binary does not contain it; a build with -tags insertcopy exports the choice (benchpath.go).

// Names of the insert paths, as the benchmark's -insert-path flag takes them.
const (
	pathUnnest = "unnest"
	pathCopy   = "copy"
)

// copyInput is persistSQL's input for this path. The statement is put together per batch
// rather than in a package variable, which every binary would carry (a microsecond against a
// transaction's tens of milliseconds).
const copyInput = `input AS (SELECT ` + inputColumns + ` FROM incoming_votes)`

// createIncomingSQL makes the COPY target once per connection; ON COMMIT DELETE ROWS empties
// it at every commit and ROLLBACK discards it, so no batch ever sees another's rows.
const createIncomingSQL = `CREATE TEMP TABLE IF NOT EXISTS incoming_votes (
    id uuid, election_id uuid, candidate_id uuid, user_id text, region text, home_region text, request_id text, accepted_at timestamptz
) ON COMMIT DELETE ROWS`

// insertCopy streams the batch into incoming_votes with COPY, then runs the statement over it.
func insertCopy(ctx context.Context, tx pgx.Tx, votes []vote) (pgx.Rows, error) {
	if _, err := tx.Exec(ctx, createIncomingSQL); err != nil {
		return nil, fmt.Errorf("create incoming_votes: %w", err)
	}
	src := pgx.CopyFromSlice(len(votes), func(i int) ([]any, error) {
		v := votes[i]
		return []any{v.ID, v.ElectionID, v.CandidateID, v.UserID, v.Region, v.home(), v.RequestID, v.AcceptedAt}, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"incoming_votes"}, strings.Split(inputColumns, ", "), src); err != nil {
		return nil, fmt.Errorf("copy votes: %w", err)
	}
	return tx.Query(ctx, fmt.Sprintf(persistSQL, copyInput))
}

// withInsertPath makes p insert through the named path, pathUnnest or pathCopy.
func (p *Processor) withInsertPath(path string) *Processor {
	switch path {
	case pathCopy:
		p.insert = insertCopy
	default:
		p.insert = insertUnnest
	}
	return p
}
